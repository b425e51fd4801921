"""Faster R-CNN detection (Bag of Freebies, Zhang et al. 2019, Table 4): targets, losses and
VOC/COCO evaluation.

The model computes its losses inside the RPN and RCNN heads, where anchors and RoIs are matched
and sampled (torchvision's design; ``ablate.models.faster_rcnn``): this task turns a padded
batch into per-image targets and sums nothing itself — the engine adds the four terms.

Targets per image: the valid boxes (label ≥ 0, positive width and height, as the yolo task
keeps them), labels shifted to 1…K (0 is the background class of the softmax), the mixup
``weights`` of each box (1 without mixup), and — only when a trick transforms targets (label
smoothing) — ``class_targets`` [M, K + 1] and ``background_target`` [K + 1]: one-hot targets
over the K + 1 softmax outputs, background included, passed through every trick's ``targets``.
The paper smooths the classification head only (Sec. 3.2); the RPN's objectness stays hard.

Evaluation runs the model on the resized images, maps the boxes back to each original image
(per-axis factor original / resized size, as torchvision's ``transform.postprocess``), clips
them, and scores them with the metric code of the yolo task: VOC07 11-point (``voc07``, the
default), VOC 2010 area (``voc10``) or COCO mAP@[.5:.95] by pycocotools (``coco``).

An RPN-only model (``model.rpn_only``) is scored by proposal recall (``metric: proposals``,
``ablate.eval.proposal_recall``): for each N of ``proposal_nums``, ``ar<N>`` — MMDetection's
AR@N, over the ground-truth boxes that are neither crowd nor difficult (on COCO, those of the
annotation file) — and ``coco_ar<N>``, COCOeval's AR@N with ``useCats = 0``; in percent.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ablate.data.datasets.coco import official_ground_truth
from ablate.errors import AblateError, did_you_mean
from ablate.eval.proposal_recall import (PROPOSAL_NUMS, average_recall, coco_average_recall,
                                         coco_gt_boxes, proposal_nums)
from ablate.eval.voc_map import VOCEvaluator
from ablate.registry import TASKS
from ablate.tasks.yolo import _gather, coco_metrics, voc_metric_name

PIPELINE_HINT = ("the rcnn task needs the Faster R-CNN data pipeline (padded batches with "
                 "'image_sizes'): set data.pipeline=rcnn (the voc, coco and fashion_scenes "
                 "configs take it from the model's task)")


def soft_class_targets(labels: torch.Tensor, num_classes: int,
                       target_fns: Iterable[Callable[[torch.Tensor], torch.Tensor]]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot targets over K + 1 classes (0 = background) through the tricks' transforms.

    Args:
        labels: int64 [..., M], 0-based foreground classes, −1 for padding.
        num_classes: K.
        target_fns: e.g. label smoothing (``smooth_one_hot`` over K + 1 classes).
    Returns:
        ``(class_targets [..., M, K + 1], background_target [K + 1])``; padding rows are
        transformed too and must be dropped with their boxes.
    """
    k1 = num_classes + 1
    target = F.one_hot((labels + 1).clamp(min=0), k1).float() * (labels >= 0)[..., None]
    background = F.one_hot(torch.zeros((), dtype=torch.long, device=labels.device), k1).float()
    for fn in target_fns:
        target, background = fn(target), fn(background)
    return target, background


def to_original(dets: list[dict[str, torch.Tensor]], image_sizes: Any, orig_sizes: Any
                ) -> list[dict[str, torch.Tensor]]:
    """Scale boxes from each resized (h, w) image back to its original (H, W) and clip."""
    out = []
    for d, hw, orig in zip(dets, torch.as_tensor(image_sizes).tolist(),
                           torch.as_tensor(orig_sizes).tolist()):
        (h, w), (oh, ow) = hw, orig
        bx = d["boxes"].float() * d["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
        bx = torch.minimum(bx.clamp(min=0), bx.new_tensor([ow, oh, ow, oh]))
        out.append({**d, "boxes": bx})
    return out


@TASKS.register("rcnn")
class RCNNTask:
    """Args:
        model: the (possibly DDP-wrapped) ``FasterRCNN``.
        num_classes: K (foreground classes).
        target_fns: the tricks' ``targets`` transforms (label smoothing), applied to one-hot
            targets over the K + 1 softmax outputs.
        metric: ``voc07`` (default), ``voc10``, ``coco`` or ``proposals`` (an RPN-only model).
        proposal_nums: the Ns of AR@N (``metric: proposals``).
    """

    OPTIONS = dict(metric="voc07", proposal_nums=PROPOSAL_NUMS)
    fixed_shapes = False  # each batch is padded to its own images' size (cuDNN autotuning off)

    def __init__(self, model: nn.Module, num_classes: int,
                 target_fns: Iterable[Callable[[torch.Tensor], torch.Tensor]] = (),
                 **kw: Any) -> None:
        for key in kw:
            if key not in self.OPTIONS:
                raise AblateError(f"unknown rcnn task option '{key}'"
                                  f"{did_you_mean(key, self.OPTIONS)}; "
                                  f"known: {', '.join(sorted(self.OPTIONS))}")
        self.opts = {**self.OPTIONS, **kw}
        self.opts["proposal_nums"] = proposal_nums(self.opts["proposal_nums"])
        if self.opts["metric"] not in ("coco", "proposals"):
            self.opts["metric"] = voc_metric_name(self.opts["metric"])
        self.model, self.num_classes, self.target_fns = model, num_classes, list(target_fns)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "image_sizes" not in batch:
            raise AblateError(PIPELINE_HINT)
        if not self.target_fns:
            return batch  # hard targets: the losses use the labels (exactly torchvision's)
        target, background = soft_class_targets(batch["labels"], self.num_classes,
                                                self.target_fns)
        return {**batch, "class_targets": target, "background_target": background}

    def targets(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Per-image target dicts for the model (see the module docstring)."""
        out = []
        for i in range(len(batch["labels"])):
            boxes, labels = batch["boxes"][i].float(), batch["labels"][i]
            keep = (labels >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            t = {"boxes": boxes[keep], "labels": labels[keep] + 1,
                 "weights": batch["weights"][i][keep].float()}
            if "class_targets" in batch:
                t["class_targets"] = batch["class_targets"][i][keep]
                t["background_target"] = batch["background_target"]
            out.append(t)
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "image_sizes" not in batch:
            raise AblateError(PIPELINE_HINT)
        return self.model(batch["image"], batch["image_sizes"], self.targets(batch))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[dict[str, Any]],
                 autocast: Callable[[], Any]) -> dict[str, float]:
        """mAP in percent over every process's share of the loader."""
        model.eval()
        gts: list[dict] = []
        dets: list[dict] = []
        for batch in loader:
            if "image_sizes" not in batch:
                raise AblateError(PIPELINE_HINT)
            with autocast():
                out = model(batch["image"], batch["image_sizes"])
            out = to_original(out, batch["image_sizes"], batch["orig_size"])
            gts += list(batch["gt"])
            dets += [{"boxes": d["boxes"].float().cpu().numpy(),
                      "scores": d["scores"].float().cpu().numpy(),
                      **({"labels": (d["labels"] - 1).cpu().numpy().astype(np.int64)}
                         if "labels" in d else {})} for d in out]
        gts, dets = _gather(gts), _gather(dets)
        if self.opts["metric"] == "proposals":
            if any("labels" in d for d in dets):
                raise AblateError("metric 'proposals' scores an RPN-only model "
                                  "(model.rpn_only=true); this model detects classes")
            return proposal_metrics(gts, dets, self.opts["proposal_nums"],
                                    official_ground_truth(loader))
        if not dets or "labels" not in dets[0]:
            raise AblateError("an RPN-only model gives proposals, not detections: set "
                              "model.task_kwargs.metric=proposals")
        if self.opts["metric"] == "coco":
            return coco_metrics(gts, dets, self.num_classes, official_ground_truth(loader))
        ev = VOCEvaluator(self.num_classes, metric=self.opts["metric"], pixel_inclusive=False)
        ev.update(gts, dets)
        return {"map": 100.0 * float(ev.compute()["map"])}  # NaN when no image has GT


def proposal_metrics(gts: list[dict], dets: list[dict], nums: tuple[int, ...],
                     official: tuple[Any, list[int]] | None = None) -> dict[str, float]:
    """``ar<N>`` (MMDetection's) and ``coco_ar<N>`` (COCOeval, ``useCats = 0``) in percent.

    With ``official`` (a COCO loader) both count the annotation file's boxes (crowd ones
    left out, or ignored by COCOeval); otherwise the loader's ground truth, difficult boxes
    left out (ignored by COCOeval)."""
    from ablate.eval.coco_map import build_coco_gt, detections_to_coco_results

    if official is not None:
        gt_coco, _ = official
        ids = [int(g["image_id"]) for g in gts]
        boxes = coco_gt_boxes(gt_coco, ids)
    else:
        ids = list(range(1, len(gts) + 1))
        boxes = [np.asarray(g["boxes"], np.float64).reshape(-1, 4)[
            ~np.asarray(g.get("difficult", np.zeros(len(g["boxes"]))), bool).reshape(-1)]
            for g in gts]
        gt_coco = build_coco_gt([{**g, "labels": np.zeros(len(g["boxes"]), np.int64)}
                                 for g in gts], ids, category_names=["object"])
    ar = average_recall(boxes, [d["boxes"] for d in dets], [d["scores"] for d in dets], nums)
    labelled = [{**d, "labels": np.zeros(len(d["scores"]), np.int64)} for d in dets]
    cat = [min(gt_coco.getCatIds())]
    coco_ar = coco_average_recall(gt_coco, detections_to_coco_results(labelled, ids, cat), nums,
                                  img_ids=ids)
    return {**{f"ar{n}": 100.0 * v for n, v in ar.items()},
            **{f"coco_ar{n}": 100.0 * v for n, v in coco_ar.items()}}
