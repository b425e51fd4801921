"""Faster R-CNN (Ren et al., 2015) on torchvision's detection parts, as reproduced by Bag of
Freebies (Zhang et al., 2019, Sec. 4.1, Table 4; GluonCV's ``faster_rcnn_resnet50_v1b_voc`` as
the reference code).

Two layouts of the same code, the backbone always the project's ResNet (``ablate.models.resnet``,
torchvision key names), so that an ablate ImageNet run's ``last.pt`` or a torchvision ResNet
state dict initialises it (``backbone_weights``):

- ``c4`` (the paper's VOC model): conv1–layer3 shared (stride 16) → ``RPNHead`` on that map;
  per RoI, ``RoIAlign`` 14×14 (sampling ratio 2; ``rcnn.roi_align: separable`` computes the
  same numbers as two matrix products, faster on small CPU maps, ``ablate.models.roi_align``)
  → layer4 (its first block strides 2: 7×7) →
  global average pool → ``FastRCNNPredictor``. Anchors: one level, base 16 × scales
  (2, 4, 8, 16, 32) = sizes 32…512, ratios 0.5, 1, 2. RPN: 256 anchors per image, IoU ≥ 0.7
  positive, < 0.3 negative, half positive; proposals 12000 → NMS 0.7 → 2000 (train),
  6000 → 300 (test), none under 16 px. RCNN: 128 RoIs, IoU ≥ 0.5 positive, a quarter positive;
  test NMS 0.3 per class, 100 detections, score > 0.01.
- ``fpn`` (torchvision's ``fasterrcnn_resnet50_fpn``, a second, clearly named choice): layer1–4
  → ``FeaturePyramidNetwork`` (256 channels, + max-pool level) → ``RPNHead`` with one size per
  level; ``MultiScaleRoIAlign`` 7×7 → ``TwoMLPHead`` (1024) → predictor, with torchvision's
  defaults. Same keys and parameter count as torchvision's model (``num_classes`` here counts
  foreground classes; torchvision's includes the background).

BatchNorm is frozen (``FrozenBatchNorm2d``, statistics and affine fixed) and conv1 + layer1 are
not trained (``trainable_layers`` = 3), as in GluonCV and torchvision with a pretrained backbone.
``norm: bn`` keeps ordinary BatchNorm (torchvision's choice without pretrained weights; the CPU
proxy trains from scratch with it).

Differences from GluonCV that follow torchvision's building blocks: anchors are centred on
``stride · (i, j)`` rather than ``stride · (i, j) + (stride − 1)/2``; anchors crossing the image
border take part in the RPN loss (GluonCV ignores them, ``allowed_border = 0``, a choice here:
``rpn.allowed_border``); the RCNN box loss is smooth L1 with β = 1/9 (GluonCV and MMDetection:
β = 1, ``rcnn.box_loss.smooth_l1.beta``); no per-class top-400 before the test NMS; no
gradient clipping (GluonCV clips at 5).

Options of the MMDetection benchmark (its Tables 5 and 9): the RCNN box loss
(``rcnn.box_loss``: name, weight and options of smooth L1, L1, balanced L1, IoU, GIoU and
bounded IoU, ``ablate.models.box_losses``), the RPN's ``smoothl1_beta``, ``allowed_border``
(anchors not inside the unpadded image by that margin are ignored before assignment; −1: all
anchors) and ``neg_pos_ub`` (sampled negatives ≤ u · max(1, sampled positives); −1: no bound).

Losses: ``WeightedRPN`` and ``WeightedRoIHeads`` subclass torchvision's modules only to carry
per-box weights (detection mixup) and soft class targets (label smoothing) through the matching
and sampling into the losses; see ``rpn_loss`` and ``rcnn_loss``. With weights 1 and hard
targets they equal torchvision's losses exactly.

``forward(images, image_sizes, targets=None)`` takes a normalised, zero-padded batch
``[B, 3, H, W]`` and the unpadded ``(h, w)`` of each image (the data pipeline resizes; see
``ablate/data/pipelines/rcnn.py``). Training returns ``{"rpn_obj", "rpn_box", "rcnn_cls",
"rcnn_box"}``; evaluation returns per image ``boxes`` (input pixels), ``scores`` and ``labels``
(1…K; 0 is the background).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from ablate.errors import AblateError, did_you_mean
from ablate.models.box_losses import BoxLoss, build_box_loss
from ablate.models.resnet import build_resnet
from ablate.models.roi_align import SeparableRoIAlign
from ablate.models.weights import load_weights
from ablate.registry import MODELS

ARCHS = ("c4", "fpn")
NORMS = ("frozen", "bn")
SMOOTH_L1_BETA = 1 / 9  # torchvision's RPN and RCNN box losses
TORCHVISION_BOX_LOSS = BoxLoss("smooth_l1", 1.0, {"beta": SMOOTH_L1_BETA})
RPN_DEFAULTS = {  # c4: GluonCV faster_rcnn_resnet50_v1b_voc; fpn: torchvision
    "c4": dict(pre_nms_train=12000, post_nms_train=2000, pre_nms_test=6000, post_nms_test=300,
               nms=0.7, fg_iou=0.7, bg_iou=0.3, batch=256, pos_fraction=0.5, min_size=16.0,
               smoothl1_beta=SMOOTH_L1_BETA, allowed_border=-1, neg_pos_ub=-1),
    "fpn": dict(pre_nms_train=2000, post_nms_train=2000, pre_nms_test=1000, post_nms_test=1000,
                nms=0.7, fg_iou=0.7, bg_iou=0.3, batch=256, pos_fraction=0.5, min_size=1e-3,
                smoothl1_beta=SMOOTH_L1_BETA, allowed_border=-1, neg_pos_ub=-1),
}
RCNN_DEFAULTS = {
    "c4": dict(roi_size=14, sampling_ratio=2, batch=128, pos_fraction=0.25, fg_iou=0.5,
               bg_iou=0.5, score_thresh=0.01, nms=0.3, max_det=100, roi_align="torchvision",
               box_loss=None),
    "fpn": dict(roi_size=7, sampling_ratio=2, batch=512, pos_fraction=0.25, fg_iou=0.5,
                bg_iou=0.5, score_thresh=0.05, nms=0.5, max_det=100, roi_align="torchvision",
                box_loss=None),
}
ROI_ALIGNS = {"torchvision": MultiScaleRoIAlign, "separable": SeparableRoIAlign}
ANCHOR_SIZES = (32, 64, 128, 256, 512)  # c4: 16 × (2, 4, 8, 16, 32); fpn: one per level
ASPECT_RATIOS = (0.5, 1.0, 2.0)


# --- losses -----------------------------------------------------------------------------------

def box_weights(matched: torch.Tensor, positive: torch.Tensor, gt_weights: torch.Tensor | None
                ) -> torch.Tensor:
    """Per-sample loss weights: a positive takes its matched box's weight, the rest 1.

    Background anchors and RoIs come from no box, so they keep weight 1 (as YOLOv3's negatives
    do here; the paper weights "objects" by their image's blending ratio).
    """
    ones = torch.ones(matched.shape, device=matched.device)
    if gt_weights is None or gt_weights.numel() == 0:
        return ones
    return torch.where(positive, gt_weights.float()[matched.clamp(min=0)], ones)


def rpn_loss(objectness: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor,
             regression_targets: torch.Tensor, weights: torch.Tensor, pos: torch.Tensor,
             neg: torch.Tensor, beta: float = SMOOTH_L1_BETA
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """RPN losses over the sampled anchors ``pos`` ∪ ``neg`` (flat indices), each weighted.

    objectness: Σ w · BCE(logit, label) / n; box: Σ_pos w · smoothL1_β(δ − t) / n, with n
    the number of sampled anchors — torchvision's ``RegionProposalNetwork.compute_loss`` when
    w = 1 and β = 1/9.
    """
    inds = torch.cat([pos, neg])
    n = max(inds.numel(), 1)
    obj = F.binary_cross_entropy_with_logits(objectness.flatten()[inds].float(), labels[inds],
                                             reduction="none")
    box = F.smooth_l1_loss(deltas[pos].float(), regression_targets[pos], beta=beta,
                           reduction="none").sum(1)
    return (obj * weights[inds]).sum() / n, (box * weights[pos]).sum() / n


def rcnn_loss(class_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor,
              regression_targets: torch.Tensor, weights: torch.Tensor,
              class_targets: torch.Tensor | None = None,
              box_loss: BoxLoss = TORCHVISION_BOX_LOSS,
              decode: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RCNN losses over N sampled RoIs (labels 0 = background), each weighted.

    cls: Σ w · CE / N, CE = −Σ_c q_c log softmax(z)_c with soft targets ``class_targets``
    [N, K + 1] (label smoothing; Bag of Freebies eq. 2–3), else the hard label; box:
    Σ_pos w · ℓ / N × ``box_loss.weight``, ℓ the ``box_loss`` of the labelled class's deltas
    (default smooth L1, β = 1/9: torchvision's ``fastrcnn_loss`` when w = 1 and the targets
    are hard). The IoU family needs ``decode = (coder, proposals [N, 4], gt boxes [N, 4])``:
    the deltas are decoded on the proposals and compared with the matched ground truth.
    """
    n = max(labels.numel(), 1)
    logits = class_logits.float()
    if class_targets is None:
        ce = F.cross_entropy(logits, labels, reduction="none")
    else:
        ce = -(class_targets * F.log_softmax(logits, -1)).sum(-1)
    pos = torch.where(labels > 0)[0]
    reg = box_regression.float().reshape(labels.numel(), -1, 4)[pos, labels[pos]]
    if box_loss.decoded:
        if decode is None:
            raise AblateError(f"box loss '{box_loss.name}' needs the proposals to decode boxes")
        coder, proposals, gt = decode
        box = box_loss(coder.decode_single(reg, proposals[pos].float()), gt[pos].float())
    else:
        box = box_loss(reg, regression_targets[pos])
    box = (box * weights[pos]).sum() / n
    return (ce * weights).sum() / n, box * box_loss.weight if box_loss.weight != 1 else box


class BoundedSampler(BalancedPositiveNegativeSampler):
    """torchvision's sampler with MMDetection's ``neg_pos_ub`` u: at most u · max(1, P)
    negatives for the P positives drawn (u < 0: no bound, torchvision's draws exactly)."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float, neg_pos_ub: float
                 ) -> None:
        super().__init__(batch_size_per_image, positive_fraction)
        self.neg_pos_ub = neg_pos_ub

    def __call__(self, matched_idxs: list[torch.Tensor]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.neg_pos_ub < 0:
            return super().__call__(matched_idxs)
        pos_masks, neg_masks = [], []
        for m in matched_idxs:
            positive, negative = torch.where(m >= 1)[0], torch.where(m == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos,
                          int(self.neg_pos_ub * max(1, num_pos)))
            pos_mask = torch.zeros_like(m, dtype=torch.uint8)
            neg_mask = torch.zeros_like(m, dtype=torch.uint8)
            pos_mask[positive[torch.randperm(positive.numel(), device=m.device)[:num_pos]]] = 1
            neg_mask[negative[torch.randperm(negative.numel(), device=m.device)[:num_neg]]] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def inside_anchors(anchors: torch.Tensor, size: tuple[int, int], border: float) -> torch.Tensor:
    """MMDetection's ``anchor_inside_flags``: x1 ≥ −b, y1 ≥ −b, x2 < w + b, y2 < h + b for the
    unpadded image size ``(h, w)``; every anchor when ``border`` < 0."""
    if border < 0:
        return torch.ones(len(anchors), dtype=torch.bool, device=anchors.device)
    h, w = size
    return ((anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
            & (anchors[:, 2] < w + border) & (anchors[:, 3] < h + border))


class WeightedRPN(RegionProposalNetwork):
    """torchvision's RPN whose losses take each target's ``weights`` [M] (default 1): an anchor
    matched to box m (a positive) gets weight w_m, negatives get 1 (``box_weights``); with the
    options ``smoothl1_beta``, ``allowed_border`` and ``neg_pos_ub`` (module docstring)."""

    _anchor_weights: list[torch.Tensor] | None = None  # from the assignment to the loss
    _image_sizes: list[tuple[int, int]] | None = None  # from forward to the assignment
    last_scores: list[torch.Tensor] | None = None  # the proposals' objectness (RPN-only model)
    smoothl1_beta: float = SMOOTH_L1_BETA
    allowed_border: float = -1

    def forward(self, images: ImageList, features: dict[str, torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        self._image_sizes = images.image_sizes
        try:
            return super().forward(images, features, targets)
        finally:
            self._image_sizes = None

    def filter_proposals(self, *args: Any, **kwargs: Any
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        boxes, scores = super().filter_proposals(*args, **kwargs)
        self.last_scores = scores
        return boxes, scores

    def assign_targets_to_anchors(self, anchors: list[torch.Tensor],
                                  targets: list[dict[str, torch.Tensor]]
                                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # torchvision's assignment, keeping the matched indices to look the weights up; with
        # allowed_border ≥ 0 the anchors outside are left out of the matching (label −1)
        labels, matched_boxes, weights = [], [], []
        sizes = self._image_sizes
        if sizes is None:  # set by forward; the border rule needs each image's size
            if self.allowed_border >= 0:
                raise AblateError("allowed_border needs the image sizes: call the RPN's forward")
            sizes = [(0, 0)] * len(anchors)
        for anc, t, size in zip(anchors, targets, sizes):
            gt = t["boxes"]
            inside = inside_anchors(anc, size, self.allowed_border)
            if gt.numel() == 0:
                labels.append(torch.where(inside, 0.0, -1.0).to(anc.device))
                matched_boxes.append(torch.zeros_like(anc))
                weights.append(torch.ones(len(anc), device=anc.device))
                continue
            if bool(inside.all()):
                idx = self.proposal_matcher(self.box_similarity(gt, anc))
            else:
                idx = torch.full((len(anc),), self.proposal_matcher.BETWEEN_THRESHOLDS,
                                 dtype=torch.int64, device=anc.device)
                if bool(inside.any()):
                    idx[inside] = self.proposal_matcher(self.box_similarity(gt, anc[inside]))
            lab = (idx >= 0).float()
            lab[idx == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0.0
            lab[idx == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
            matched_boxes.append(gt[idx.clamp(min=0)])
            weights.append(box_weights(idx, lab > 0, t.get("weights")))
        self._anchor_weights = weights  # read by compute_loss, called next in forward
        return labels, matched_boxes

    def compute_loss(self, objectness: torch.Tensor, pred_bbox_deltas: torch.Tensor,
                     labels: list[torch.Tensor], regression_targets: list[torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        weights, self._anchor_weights = self._anchor_weights, None
        labels_flat = torch.cat(labels)
        weights_flat = torch.ones_like(labels_flat) if weights is None else torch.cat(weights)
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos))[0]
        neg = torch.where(torch.cat(neg))[0]
        return rpn_loss(objectness, pred_bbox_deltas, labels_flat, torch.cat(regression_targets),
                        weights_flat, pos, neg, self.smoothl1_beta)


class WeightedRoIHeads(RoIHeads):
    """torchvision's box ``RoIHeads`` (no masks, no keypoints) with weighted, soft-target losses.

    Targets may carry ``weights`` [M] (mixup), ``class_targets`` [M, K + 1] and
    ``background_target`` [K + 1] (label smoothing over the K + 1 softmax outputs, background
    included). Each sampled RoI takes its matched box's weight and soft target when positive,
    weight 1 and the background target otherwise. ``box_loss`` is the RCNN box loss.
    """

    box_loss: BoxLoss = TORCHVISION_BOX_LOSS

    def sample(self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor,
                          torch.Tensor | None, torch.Tensor | None]:
        """torchvision's ``select_training_samples`` plus each sampled RoI's weight and soft
        target. Returns proposals (per image), then over all images: labels, regression
        targets, weights, soft targets (None without ``class_targets``) and the matched
        ground-truth boxes (None unless the box loss works on decoded boxes)."""
        proposals, matched, labels, reg = self.select_training_samples(proposals, targets)
        soft = "class_targets" in targets[0]
        weights, classes, gt = [], [], []
        for idx, lab, t, props in zip(matched, labels, targets, proposals):
            weights.append(box_weights(idx, lab > 0, t.get("weights")))
            if soft:
                bg = t["background_target"].expand(len(lab), -1)
                fg = t["class_targets"][idx] if len(t["class_targets"]) else bg
                classes.append(torch.where((lab > 0)[:, None], fg, bg))
            if self.box_loss.decoded:  # only positives read it: an image without boxes has none
                boxes = t["boxes"].to(props.dtype)
                gt.append(boxes[idx] if len(boxes) else torch.zeros_like(props))
        return (proposals, torch.cat(labels), torch.cat(reg), torch.cat(weights),
                torch.cat(classes) if soft else None, torch.cat(gt) if gt else None)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]],
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise AblateError("Faster R-CNN needs targets in training")
            proposals, labels, reg, weights, soft, gt = self.sample(proposals, targets)
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        if self.training:
            decode = (self.box_coder, torch.cat(proposals), gt) if gt is not None else None
            cls, box = rcnn_loss(class_logits, box_regression, labels, reg, weights, soft,
                                 self.box_loss, decode)
            return [], {"rcnn_cls": cls, "rcnn_box": box}
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression,
                                                            proposals, image_shapes)
        return [{"boxes": b, "scores": s, "labels": lab}
                for b, s, lab in zip(boxes, scores, labels)], {}


# --- model ------------------------------------------------------------------------------------

class ResNetC4Head(nn.Module):
    """The per-RoI head of the C4 layout: layer4 then global average pooling."""

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean((2, 3))


class C4Backbone(nn.Module):
    """conv1–layer3 of a ResNet: ``{"0": stride-16 map}``; keys ``body.*`` like torchvision's
    ``BackboneWithFPN``."""

    def __init__(self, body: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body, self.out_channels = body, out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body(x)


def _input_sizes(images: torch.Tensor, image_sizes: Any, no_targets: bool
                 ) -> list[tuple[int, int]]:
    """The unpadded ``(h, w)`` of each image, checked against the batch; training needs
    targets."""
    sizes = [(int(h), int(w)) for h, w in torch.as_tensor(image_sizes).tolist()]
    if len(sizes) != images.shape[0]:
        raise AblateError(f"{images.shape[0]} images but {len(sizes)} image sizes")
    if no_targets:
        raise AblateError("a detector needs targets in training")
    return sizes


class FasterRCNN(nn.Module):
    """Backbone → ``WeightedRPN`` → ``WeightedRoIHeads``; see the module docstring."""

    def __init__(self, backbone: nn.Module, rpn: WeightedRPN, roi_heads: WeightedRoIHeads,
                 num_classes: int) -> None:
        super().__init__()
        self.backbone, self.rpn, self.roi_heads = backbone, rpn, roi_heads
        self.num_classes = num_classes
        self.backbone_report: dict[str, Any] | None = None

    def forward(self, images: torch.Tensor, image_sizes: Any,
                targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        sizes = _input_sizes(images, image_sizes, self.training and targets is None)
        features = self.backbone(images)
        proposals, rpn_losses = self.rpn(ImageList(images, sizes), features, targets)
        detections, rcnn_losses = self.roi_heads(features, proposals, sizes, targets)
        if self.training:
            return {"rpn_obj": rpn_losses["loss_objectness"],
                    "rpn_box": rpn_losses["loss_rpn_box_reg"], **rcnn_losses}
        return detections


class RPNOnly(nn.Module):
    """Backbone → ``WeightedRPN``, trained alone (the MMDetection benchmark's RPN study, its
    Table 9). Training returns ``{"rpn_obj", "rpn_box"}``; evaluation returns per image the
    proposals ``boxes`` (input pixels) and their objectness ``scores`` (sigmoid), best first —
    ``rpn.post_nms_test`` of them."""

    def __init__(self, backbone: nn.Module, rpn: WeightedRPN) -> None:
        super().__init__()
        self.backbone, self.rpn = backbone, rpn
        self.backbone_report: dict[str, Any] | None = None

    def forward(self, images: torch.Tensor, image_sizes: Any,
                targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        sizes = _input_sizes(images, image_sizes, self.training and targets is None)
        proposals, losses = self.rpn(ImageList(images, sizes), self.backbone(images), targets)
        if self.training:
            return {"rpn_obj": losses["loss_objectness"], "rpn_box": losses["loss_rpn_box_reg"]}
        scores, self.rpn.last_scores = self.rpn.last_scores, None
        return [{"boxes": b, "scores": sc} for b, sc in zip(proposals, scores)]


def convert_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` by a ``FrozenBatchNorm2d`` holding its statistics and
    affine values (as buffers: no longer parameters)."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, k).copy_(getattr(module, k).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, convert_frozen_bn(child))
    return module


def freeze_stages(resnet: nn.Module, trainable_layers: int) -> None:
    """torchvision's rule: train the last ``trainable_layers`` of layer4, layer3, layer2,
    layer1, conv1 (5 also trains the stem's bn1); the rest gets ``requires_grad = False``."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in resnet.named_parameters():
        if not any(name.startswith(t) for t in train):
            p.requires_grad_(False)


def _options(given: Mapping[str, Any] | None, defaults: dict[str, Any], what: str
             ) -> dict[str, Any]:
    given = dict(given or {})
    for k in given:
        if k not in defaults:
            raise AblateError(f"unknown faster_rcnn {what} option '{k}'"
                              f"{did_you_mean(k, defaults)}; known: {', '.join(defaults)}")
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}  # null: default


def _resnet(depth: int, variant: str, width: float, in_chans: int,
            backbone_weights: str | Path | None) -> tuple[nn.Module, dict | None]:
    """The project's ResNet without its classifier, optionally loaded from a local file."""
    net = build_resnet(depth=depth, variant=variant, width=width, in_chans=in_chans)
    del net.avgpool, net.fc
    report = None
    if backbone_weights:
        rep = load_weights(net, backbone_weights, what="backbone_weights",
                           prefix_map={"backbone.body.": "", "backbone.": ""})
        print(rep.summary("backbone_weights"))
        report = rep.as_dict()
    return net, report


def _check(arch: str, norm: str, num_classes: int, trainable_layers: int,
           sizes: tuple[float, ...], ratios: tuple[float, ...]) -> None:
    if arch not in ARCHS:
        raise AblateError(f"faster_rcnn arch '{arch}' is not one of {ARCHS}")
    if norm not in NORMS:
        raise AblateError(f"faster_rcnn norm '{norm}' is not one of {NORMS}")
    if num_classes < 1:
        raise AblateError(f"faster_rcnn num_classes must be >= 1, got {num_classes}")
    if not 0 <= trainable_layers <= 5:
        raise AblateError(f"faster_rcnn trainable_layers must be in 0..5, got {trainable_layers}")
    if not sizes or not ratios or min(sizes + ratios) <= 0:
        raise AblateError(f"faster_rcnn anchor_sizes and aspect_ratios must be positive, got "
                          f"{list(sizes)}, {list(ratios)}")
    if arch == "fpn" and len(sizes) != 5:
        raise AblateError(f"faster_rcnn fpn needs 5 anchor sizes (one per level), got "
                          f"{list(sizes)}")


def _check_rpn(r: Mapping[str, Any]) -> None:
    for key in ("smoothl1_beta", "allowed_border", "neg_pos_ub"):
        v = r[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AblateError(f"model.rpn.{key}={v!r}: must be a number")
    if r["smoothl1_beta"] < 0:
        raise AblateError(f"model.rpn.smoothl1_beta={r['smoothl1_beta']!r}: must be >= 0")
    for key in ("allowed_border", "neg_pos_ub"):
        if r[key] < 0 and r[key] != -1:
            raise AblateError(f"model.rpn.{key}={r[key]!r}: must be >= 0, or -1 for no limit")


def _check_rcnn(arch: str, c: Mapping[str, Any]) -> None:
    if c["roi_align"] not in ROI_ALIGNS:
        raise AblateError(f"faster_rcnn rcnn.roi_align '{c['roi_align']}' is not one of "
                          f"{', '.join(ROI_ALIGNS)}{did_you_mean(str(c['roi_align']), ROI_ALIGNS)}")
    if arch == "fpn" and c["roi_align"] != "torchvision":
        raise AblateError("faster_rcnn fpn pools four levels: rcnn.roi_align must be "
                          "'torchvision' (separable pools the one C4 map)")


def _c4(net: nn.Module, channels: list[int], sizes: tuple[float, ...],
        ratios: tuple[float, ...], c: Mapping[str, Any], num_classes: int) -> tuple:
    """The paper's C4 parts: layer1–3 as the backbone, layer4 as the RoI head."""
    backbone = C4Backbone(IntermediateLayerGetter(net, {"layer3": "0"}), channels[2])
    anchors = AnchorGenerator((sizes,), (ratios,))
    pool = ROI_ALIGNS[c["roi_align"]](["0"], int(c["roi_size"]), int(c["sampling_ratio"]))
    return (backbone, anchors, pool, ResNetC4Head(net.layer4),
            FastRCNNPredictor(channels[3], num_classes + 1))


def _fpn(net: nn.Module, channels: list[int], sizes: tuple[float, ...],
         ratios: tuple[float, ...], c: Mapping[str, Any], num_classes: int, fpn_channels: int,
         representation: int) -> tuple:
    """torchvision's FPN parts: four pooled levels and a two-layer MLP head."""
    backbone = BackboneWithFPN(net, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                               channels, int(fpn_channels))
    anchors = AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * len(sizes))
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], int(c["roi_size"]), int(c["sampling_ratio"]))
    head = TwoMLPHead(int(fpn_channels) * int(c["roi_size"]) ** 2, int(representation))
    return backbone, anchors, pool, head, FastRCNNPredictor(int(representation), num_classes + 1)


def _head_options(arch: str, rpn: Mapping[str, Any] | None, rcnn: Mapping[str, Any] | None
                  ) -> tuple[dict[str, Any], dict[str, Any], BoxLoss]:
    """The RPN and RCNN options over the layout's defaults, checked, and the RCNN box loss."""
    if arch not in ARCHS:
        raise AblateError(f"faster_rcnn arch '{arch}' is not one of {ARCHS}")
    r, c = _options(rpn, RPN_DEFAULTS[arch], "rpn"), _options(rcnn, RCNN_DEFAULTS[arch], "rcnn")
    _check_rpn(r)
    _check_rcnn(arch, c)
    box_loss = (TORCHVISION_BOX_LOSS if c["box_loss"] is None
                else build_box_loss(c["box_loss"], "model.rcnn.box_loss"))
    return r, c, box_loss


def check_options(*, arch: str = "c4", rpn: Mapping[str, Any] | None = None,
                  rcnn: Mapping[str, Any] | None = None, rpn_only: bool = False,
                  **_: Any) -> None:
    """The head options of a model config checked without building it (at plan time)."""
    _head_options(arch, rpn, rcnn)
    if rpn_only and (rcnn or {}).get("box_loss") is not None:
        raise AblateError("model.rcnn.box_loss: an RPN-only model (model.rpn_only) has no RCNN "
                          "head and no decoded boxes to apply it to")


@MODELS.register("faster_rcnn")
def build_faster_rcnn(*, num_classes: int, arch: str = "c4", depth: int = 50,
                      variant: str = "b", width: float = 1.0, in_chans: int = 3,
                      norm: str = "frozen", trainable_layers: int = 3,
                      anchor_sizes: Sequence[float] = ANCHOR_SIZES,
                      aspect_ratios: Sequence[float] = ASPECT_RATIOS, fpn_channels: int = 256,
                      representation: int = 1024, rpn: Mapping[str, Any] | None = None,
                      rcnn: Mapping[str, Any] | None = None,
                      backbone_weights: str | None = None, rpn_only: bool = False
                      ) -> FasterRCNN | RPNOnly:
    """Build Faster R-CNN (see the module docstring).

    Args:
        num_classes: foreground classes K (20 for VOC); the predictor has K + 1 outputs.
        arch: ``c4`` (the paper's) or ``fpn`` (torchvision's ``fasterrcnn_resnet50_fpn``).
        depth, variant, width, in_chans: the ResNet (``build_resnet``; v1b = ``b``).
        norm: ``frozen`` (FrozenBatchNorm2d) or ``bn`` (trained BatchNorm, for from-scratch
            proxies).
        trainable_layers: 0–5 backbone stages trained, counted from layer4.
        anchor_sizes: pixels; c4: all on the one level; fpn: one per level (5).
        aspect_ratios: h/w ratios of every size.
        fpn_channels, representation: FPN width and TwoMLPHead width (fpn only).
        rpn: overrides of ``RPN_DEFAULTS[arch]`` (pre/post-NMS counts, IoUs, sampling, …).
        rcnn: overrides of ``RCNN_DEFAULTS[arch]`` (RoI size, sampling, test thresholds;
            ``box_loss``: ``{name, weight, <name>: {options}}``, ``ablate.models.box_losses``;
            None: smooth L1 with β = 1/9, torchvision's).
        backbone_weights: local checkpoint for the ResNet (an ablate run's ``last.pt``, a
            torchvision ResNet state dict, or a detector's with ``backbone.body.`` keys);
            the load report is kept in ``model.backbone_report``.
        rpn_only: the backbone and the RPN alone (``RPNOnly``): proposals, no RCNN head.
    """
    sizes, ratios = tuple(float(s) for s in anchor_sizes), tuple(float(r) for r in aspect_ratios)
    _check(arch, norm, num_classes, trainable_layers, sizes, ratios)
    r, c, box_loss = _head_options(arch, rpn, rcnn)

    net, report = _resnet(depth, variant, width, in_chans, backbone_weights)
    freeze_stages(net, trainable_layers)
    if norm == "frozen":
        convert_frozen_bn(net)
    channels = [blocks[-1].conv3.out_channels if hasattr(blocks[-1], "conv3")
                else blocks[-1].conv2.out_channels
                for blocks in (net.layer1, net.layer2, net.layer3, net.layer4)]
    if arch == "c4":
        parts = _c4(net, channels, sizes, ratios, c, num_classes)
    else:
        parts = _fpn(net, channels, sizes, ratios, c, num_classes, fpn_channels, representation)
    backbone, anchors, pool, head, predictor = parts
    region = WeightedRPN(
        anchors, RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        r["fg_iou"], r["bg_iou"], int(r["batch"]), r["pos_fraction"],
        dict(training=int(r["pre_nms_train"]), testing=int(r["pre_nms_test"])),
        dict(training=int(r["post_nms_train"]), testing=int(r["post_nms_test"])), r["nms"])
    region.min_size = float(r["min_size"])
    region.smoothl1_beta, region.allowed_border = float(r["smoothl1_beta"]), r["allowed_border"]
    region.fg_bg_sampler = BoundedSampler(int(r["batch"]), r["pos_fraction"], r["neg_pos_ub"])
    if rpn_only:
        model = RPNOnly(backbone, region)
        model.backbone_report = report
        return model
    heads = WeightedRoIHeads(pool, head, predictor, c["fg_iou"], c["bg_iou"], int(c["batch"]),
                             c["pos_fraction"], None, c["score_thresh"], c["nms"],
                             int(c["max_det"]))
    heads.box_loss = box_loss
    model = FasterRCNN(backbone, region, heads, num_classes)
    model.backbone_report = report
    return model


build_faster_rcnn.check_options = check_options  # type: ignore[attr-defined]
