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
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ablate.data.datasets.coco import official_ground_truth
from ablate.errors import AblateError, did_you_mean
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
        metric: ``voc07`` (default), ``voc10`` or ``coco``.
    """

    OPTIONS = dict(metric="voc07")
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
        if self.opts["metric"] != "coco":
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
                      "labels": (d["labels"] - 1).cpu().numpy().astype(np.int64)} for d in out]
        gts, dets = _gather(gts), _gather(dets)
        if self.opts["metric"] == "coco":
            return coco_metrics(gts, dets, self.num_classes, official_ground_truth(loader))
        ev = VOCEvaluator(self.num_classes, metric=self.opts["metric"], pixel_inclusive=False)
        ev.update(gts, dets)
        return {"map": 100.0 * float(ev.compute()["map"])}  # NaN when no image has GT
