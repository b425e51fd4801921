"""Faster R-CNN losses and the rcnn task: hand-computed loss values with and without label
smoothing and mixup weights, equality with torchvision's losses at weight 1, weights and soft
targets that survive anchor/RoI matching and sampling, targets from padded batches, and an
evaluation that maps detections back to the original images."""

import contextlib
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork

from ablate.errors import AblateError
from ablate.models.box_losses import build_box_loss
from ablate.models.faster_rcnn import box_weights, build_faster_rcnn, rcnn_loss, rpn_loss
from ablate.registry import TASKS
from ablate.tasks.rcnn import RCNNTask, soft_class_targets, to_original
from ablate.tricks import build_tricks

LN2 = math.log(2.0)
SL1_ONE = 1 - 1 / 18  # smooth L1 (β = 1/9) of a difference of 1


def tiny(**kw):
    torch.manual_seed(0)
    return build_faster_rcnn(num_classes=2, arch="c4", depth=14, width=0.125, norm="bn",
                             trainable_layers=5, anchor_sizes=[16, 32], **kw)


def smoothing(formula: str):
    (t,) = build_tricks({"label_smoothing": {"epsilon": 0.1, "formula": formula}}, "rcnn")
    return [t.targets]


# Two sampled RoIs, K = 2 (+ background): RoI 0 is class 1 with p = (1/4, 1/2, 1/4) and deltas
# (1, 0, 0, 0) for its class against a zero target; RoI 1 is background with p = (1/2, 1/4, 1/4).
LOGITS = torch.tensor([[0.0, LN2, 0.0], [LN2, 0.0, 0.0]])
LABELS = torch.tensor([1, 0])
DELTAS = torch.zeros(2, 12)
DELTAS[0, 4] = 1.0
TARGETS = torch.zeros(2, 4)


def test_rcnn_loss_hand_computed_with_weights_and_smoothing():
    ones = torch.ones(2)
    cls, box = rcnn_loss(LOGITS, DELTAS, LABELS, TARGETS, ones)
    assert cls.item() == pytest.approx(LN2, abs=1e-6)  # both RoIs: −log 1/2
    assert box.item() == pytest.approx(SL1_ONE / 2, abs=1e-6)  # normalised by all 2 RoIs
    tv_cls, tv_box = fastrcnn_loss(LOGITS, DELTAS, [LABELS], [TARGETS])
    assert torch.equal(cls, tv_cls) and torch.equal(box, tv_box)  # torchvision's at weight 1

    w = torch.tensor([0.25, 1.0])  # the positive came from an image mixed at λ = 0.25
    cls, box = rcnn_loss(LOGITS, DELTAS, LABELS, TARGETS, w)
    assert cls.item() == pytest.approx((0.25 * LN2 + LN2) / 2, abs=1e-6)
    assert box.item() == pytest.approx(0.25 * SL1_ONE / 2, abs=1e-6)

    # eq. 3 ("paper"): q = 1 − ε on the class, ε/K on the other K = 2 of the 3 outputs
    fg, bg = soft_class_targets(torch.tensor([0]), 2, smoothing("paper"))
    assert fg[0].tolist() == pytest.approx([0.05, 0.9, 0.05])
    assert bg.tolist() == pytest.approx([0.9, 0.05, 0.05])
    cls, _ = rcnn_loss(LOGITS, DELTAS, LABELS, TARGETS, ones, torch.stack([fg[0], bg]))
    # RoI 0: −(0.05 log ¼ + 0.9 log ½ + 0.05 log ¼) = 1.1 ln 2; RoI 1 the same
    assert cls.item() == pytest.approx(1.1 * LN2, abs=1e-6)
    # GluonCV's classification formula ("code"): 1 − ε + ε/3 and ε/3
    fg, bg = soft_class_targets(torch.tensor([0]), 2, smoothing("code"))
    cls, _ = rcnn_loss(LOGITS, DELTAS, LABELS, TARGETS, w, torch.stack([fg[0], bg]))
    assert cls.item() == pytest.approx((0.25 + 1.0) * (16 / 15) * LN2 / 2, abs=1e-6)


def test_rpn_loss_hand_computed_and_equal_to_torchvision():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])  # anchors: positive, negative, negative
    labels = torch.tensor([1.0, 0.0, 0.0])
    deltas = torch.zeros(3, 4)
    deltas[0, 0] = 0.1  # below β = 1/9: 0.5 · 0.1² / β = 0.045
    targets = torch.zeros(3, 4)
    pos, neg = torch.tensor([0]), torch.tensor([1, 2])
    obj, box = rpn_loss(logits, deltas, labels, targets, torch.tensor([0.5, 1.0, 1.0]), pos, neg)
    # BCE: ln 2 (σ(0) vs 1), ln 2 (σ(0) vs 0), ln 4 (σ(ln 3) = 3/4 vs 0); n = 3 sampled
    assert obj.item() == pytest.approx((0.5 * LN2 + LN2 + 2 * LN2) / 3, abs=1e-6)
    assert box.item() == pytest.approx(0.5 * 0.045 / 3, abs=1e-7)

    m = tiny()
    n = 50
    logits, deltas = torch.randn(n), torch.randn(n, 4)
    labels = [torch.tensor([1.0, 0, -1, 0, 1] * 10)]
    reg = [torch.randn(n, 4)]
    torch.manual_seed(5)
    ref = RegionProposalNetwork.compute_loss(m.rpn, logits, deltas, labels, reg)
    torch.manual_seed(5)  # the same sampler draws; no assignment ran: weights 1
    ours = m.rpn.compute_loss(logits, deltas, labels, reg)
    assert torch.allclose(ours[0], ref[0], rtol=1e-6, atol=0)  # summation order only
    assert torch.allclose(ours[1], ref[1], rtol=1e-6, atol=0)


GT = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]),
      "labels": torch.tensor([1, 2]), "weights": torch.tensor([0.25, 0.75])}


def test_rpn_anchors_take_the_weight_of_their_box():
    m = tiny(rpn={"batch": 256})
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0],  # = box 0
                             [20.0, 20.0, 40.0, 40.0],  # = box 1
                             [60.0, 60.0, 70.0, 70.0],  # IoU 0: negative
                             [0.0, 0.0, 10.0, 20.0]])]  # IoU 0.5 with box 0: ignored
    labels, _ = m.rpn.assign_targets_to_anchors(anchors, [GT])
    assert labels[0].tolist() == [1.0, 1.0, 0.0, -1.0]
    assert m.rpn._anchor_weights[0].tolist() == [0.25, 0.75, 1.0, 1.0]
    # every non-ignored anchor is sampled (256 > 3): objectness 0 → ln 2 each; deltas 1 on
    # every coordinate of a positive against zero targets (anchors equal to their boxes)
    deltas = torch.ones(4, 4)
    obj, box = m.rpn.compute_loss(torch.zeros(4), deltas, labels, [torch.zeros(4, 4)])
    assert obj.item() == pytest.approx((0.25 + 0.75 + 1.0) * LN2 / 3, abs=1e-6)
    assert box.item() == pytest.approx((0.25 + 0.75) * 4 * SL1_ONE / 3, abs=1e-6)


def test_rois_keep_their_box_weight_and_soft_target_through_sampling():
    fg, bg = soft_class_targets(GT["labels"] - 1, 2, smoothing("paper"))
    target = {**GT, "class_targets": fg, "background_target": bg}
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 11.0],  # IoU 10/11 with box 0
                               [20.0, 20.0, 40.0, 40.0],  # box 1
                               [60.0, 60.0, 70.0, 70.0],  # background
                               [0.0, 30.0, 10.0, 40.0]])]  # background
    m = tiny(rcnn={"batch": 128}).train()
    props, labels, _, weights, soft, gt = m.roi_heads.sample(proposals, [target])
    # everything is sampled (2 + 2 GT boxes appended as proposals, 2 background)
    got = sorted(zip(props[0].tolist(), labels.tolist(), weights.tolist(), soft.tolist()))
    want = sorted([([0.0, 0.0, 10.0, 11.0], 1, 0.25, fg[0].tolist()),
                   ([20.0, 20.0, 40.0, 40.0], 2, 0.75, fg[1].tolist()),
                   ([0.0, 0.0, 10.0, 10.0], 1, 0.25, fg[0].tolist()),
                   ([20.0, 20.0, 40.0, 40.0], 2, 0.75, fg[1].tolist()),
                   ([60.0, 60.0, 70.0, 70.0], 0, 1.0, bg.tolist()),
                   ([0.0, 30.0, 10.0, 40.0], 0, 1.0, bg.tolist())])
    assert len(got) == 6 and all(g[:3] == w[:3] and g[3] == pytest.approx(w[3])
                                 for g, w in zip(got, want))
    assert gt is None  # smooth L1 works on the deltas
    m.roi_heads.box_loss = build_box_loss({"name": "giou"})
    props, labels, _, _, _, gt = m.roi_heads.sample(proposals, [target])
    for box, lab, g in zip(props[0].tolist(), labels.tolist(), gt.tolist()):
        if lab > 0:  # each positive carries its matched ground-truth box, for the decoded loss
            assert g == GT["boxes"][lab - 1].tolist(), (box, lab, g)
    # random subsamples of 2 RoIs (1 positive at most): each keeps its own weight
    m = tiny(rcnn={"batch": 2, "pos_fraction": 0.5}).train()
    for seed in range(8):
        torch.manual_seed(seed)
        props, labels, _, weights, _, _ = m.roi_heads.sample(proposals, [target])
        assert len(labels) == 2 and (labels > 0).sum() == 1
        for p, lab, w in zip(props[0], labels.tolist(), weights.tolist()):
            near_box0 = p[2] <= 10.0
            assert w == (1.0 if lab == 0 else 0.25 if near_box0 else 0.75)
    assert box_weights(torch.tensor([0, 1, 0]), torch.tensor([True, True, False]),
                       None).tolist() == [1.0, 1.0, 1.0]


def padded_batch():
    return {"image": torch.zeros(2, 3, 64, 96),
            "image_sizes": torch.tensor([[64, 96], [48, 80]]),
            "boxes": torch.tensor([[[0.0, 0, 10, 10], [5, 5, 5, 20], [0, 0, 0, 0]],
                                   [[1.0, 2, 30, 40], [0, 0, 0, 0], [0, 0, 0, 0]]]),
            "labels": torch.tensor([[0, 3, -1], [2, -1, -1]]),
            "weights": torch.tensor([[0.4, 0.6, 0.0], [1.0, 0.0, 0.0]]),
            "orig_size": torch.tensor([[128, 192], [96, 160]])}


def test_task_targets_from_a_padded_batch():
    task = TASKS.get("rcnn")(model=None, num_classes=4)
    batch = task.prepare(padded_batch())
    assert "class_targets" not in batch  # no target transform: hard labels (torchvision's)
    t = task.targets(batch)
    assert t[0]["boxes"].tolist() == [[0.0, 0, 10, 10]]  # zero-width box and padding dropped
    assert t[0]["labels"].tolist() == [1] and t[0]["weights"].tolist() == [pytest.approx(0.4)]
    assert t[1]["labels"].tolist() == [3] and t[1]["weights"].tolist() == [1.0]

    task = RCNNTask(model=None, num_classes=4, target_fns=smoothing("paper"))
    batch = task.prepare(padded_batch())
    assert batch["class_targets"].shape == (2, 3, 5)
    assert batch["background_target"].tolist() == pytest.approx([0.9] + [0.025] * 4)
    t = task.targets(batch)
    assert t[1]["class_targets"].tolist() == [pytest.approx([0.025, 0.025, 0.025, 0.9, 0.025])]
    with pytest.raises(AblateError, match="data.pipeline=rcnn"):
        task.prepare({k: v for k, v in padded_batch().items() if k != "image_sizes"})
    with pytest.raises(AblateError, match="did you mean 'metric'"):
        RCNNTask(model=None, num_classes=4, metirc="voc07")
    with pytest.raises(AblateError, match="unknown detection metric"):
        RCNNTask(model=None, num_classes=4, metric="vco07")


class Oracle(torch.nn.Module):
    """Returns each image's ground truth (in input pixels) as detections with score 1."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def forward(self, images, image_sizes):
        b = self.batch
        return [{"boxes": b["boxes"][i][b["labels"][i] >= 0],
                 "labels": b["labels"][i][b["labels"][i] >= 0] + 1,
                 "scores": torch.ones(int((b["labels"][i] >= 0).sum()))} for i in range(2)]


def test_evaluate_maps_detections_to_the_original_images():
    batch = padded_batch()
    batch["boxes"][0, 1] = torch.tensor([5.0, 5, 30, 20])
    scale = torch.tensor([[2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]])  # orig / resized
    batch["gt"] = [{"boxes": (batch["boxes"][i][batch["labels"][i] >= 0] * scale[i]).numpy(),
                    "labels": batch["labels"][i][batch["labels"][i] >= 0].numpy(),
                    "difficult": np.zeros(int((batch["labels"][i] >= 0).sum()), bool)}
                   for i in range(2)]
    task = RCNNTask(model=None, num_classes=4)
    m = task.evaluate(Oracle(batch), [batch], contextlib.nullcontext)
    assert m == {"map": pytest.approx(100.0, abs=1e-9)}
    out = to_original([{"boxes": torch.tensor([[10.0, 10, 96, 64]])}], [[64, 96]], [[100, 150]])
    assert out[0]["boxes"].tolist() == [[15.625, 15.625, 150.0, 100.0]]
    out = to_original([{"boxes": torch.tensor([[-3.0, 0, 99, 70]])}], [[64, 96]], [[64, 96]])
    assert out[0]["boxes"].tolist() == [[0.0, 0.0, 96.0, 64.0]]  # clipped to the image
