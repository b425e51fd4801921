"""YOLOv3 detection: targets, loss, decoding and VOC evaluation (Bag of Freebies, Zhang et al.
2019, Sec. 3 and Table 3; GluonCV's ``YOLOV3TargetMerger`` / ``YOLOV3Loss`` as the reference).

Targets: each GT box goes to the single best of all 9 anchors by shape IoU (both centred at the
origin), at cell floor(centre / stride) of that anchor's scale; tx, ty = fractional offsets in
the cell, tw, th = log(w / anchor_w), log(h / anchor_h); box weight = (2 − w·h/(W·H)) × the box's
mixup weight. When two boxes of an image land on the same (scale, anchor, cell), the later box
(higher index in the batch) wins, as in GluonCV's sequential target generator.

Loss (summed over cells and boxes, averaged over the batch), all in fp32:

- ``obj``: BCE-with-logits; target 1 at positives (weighted by the mixup weight), 0 elsewhere,
  except non-positives whose decoded box has IoU > ``ignore_iou`` (0.7; Darknet: 0.5) with some
  GT of the same image, which get weight 0.
- ``center``: BCE-with-logits of (tx, ty) × box weight; ``scale``: L1 of (tw, th) × box weight.
- ``cls``: per-class BCE-with-logits (sigmoid) against ``class_targets`` × mixup weight.

Evaluation decodes ((σ(tx) + cx)·stride, exp(tw)·anchor; score = σ(obj)·σ(cls)), keeps per-class
candidates with score > 0.01 (at most the best ``pre_nms_topk`` = 400 per image, GluonCV's
``nms_topk``), runs class-aware NMS at 0.45, keeps 100 per image, maps the boxes back to the
original image (plain resize) and computes VOC07 mAP. ``eval_coords="input"`` instead scales the
GT to the network input, as the reference code does (≠ the correct mapping).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ablate.data.datasets.coco import official_ground_truth
from ablate.errors import AblateError, did_you_mean
from ablate.eval.voc_map import METRICS as VOC_METRICS
from ablate.eval.voc_map import VOCEvaluator
from ablate.models.yolov3 import ANCHORS, STRIDES
from ablate.registry import TASKS

MAX_LOG_SCALE = 10.0  # exp(tw) is clamped at e^10 when decoding: only a diverged net gets there


def _flatten(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, A, H, W, C] per scale → [B, N, C] (scale, anchor, row, column order), fp32."""
    return torch.cat([o.reshape(o.shape[0], -1, o.shape[-1]) for o in outputs], 1).float()


def decode_boxes(outputs: Sequence[torch.Tensor], anchors: torch.Tensor,
                 strides: Sequence[int] = STRIDES) -> torch.Tensor:
    """Decoded xyxy boxes in input pixels, [B, N, 4] in the order of :func:`_flatten`."""
    out = []
    for o, anc, st in zip(outputs, anchors, strides):
        o = o.float()
        b, a, h, w, _ = o.shape
        gy, gx = torch.meshgrid(torch.arange(h, device=o.device, dtype=o.dtype),
                                torch.arange(w, device=o.device, dtype=o.dtype), indexing="ij")
        cx = (torch.sigmoid(o[..., 0]) + gx) * st
        cy = (torch.sigmoid(o[..., 1]) + gy) * st
        anc = anc.to(o).view(1, a, 1, 1, 2)
        half = torch.exp(o[..., 2:4].clamp(max=MAX_LOG_SCALE)) * anc / 2
        xy = torch.stack([cx, cy], -1)
        out.append(torch.cat([xy - half, xy + half], -1).reshape(b, -1, 4))
    return torch.cat(out, 1)


def build_targets(outputs: Sequence[torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor,
                  weights: torch.Tensor | None, anchors: torch.Tensor,
                  strides: Sequence[int] = STRIDES,
                  image_hw: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Assign GT boxes to anchors (see the module docstring); vectorised over B × M.

    Returns one row per kept positive: ``index`` (into the flat [B·N] predictions), ``batch``,
    ``box`` (index in M), ``scale``, ``anchor``, ``gx``, ``gy``, ``txy`` [P,2], ``twh`` [P,2],
    ``box_weight`` (incl. mixup weight) and ``mix_weight``.
    """
    dev = boxes.device
    boxes = boxes.float()
    bsz, m = labels.shape
    if image_hw is None:
        image_hw = (strides[0] * outputs[0].shape[2], strides[0] * outputs[0].shape[3])
    mix = torch.ones(bsz, m, device=dev) if weights is None else weights.float()
    anc = anchors.to(dev).float()
    n_anc = anc.shape[1]
    wh = boxes[..., 2:] - boxes[..., :2]
    ctr = (boxes[..., 2:] + boxes[..., :2]) / 2
    valid = (labels >= 0) & (wh > 0).all(-1)
    flat_anc = anc.view(-1, 2)
    inter = torch.minimum(wh[..., None, :], flat_anc).prod(-1)  # [B, M, 9]
    iou = inter / (wh.prod(-1)[..., None] + flat_anc.prod(-1) - inter)
    best = iou.argmax(-1)  # first maximum on ties
    scale, anchor = best // n_anc, best % n_anc
    st = torch.tensor(strides, device=dev, dtype=torch.float32)[scale]
    sizes = [n_anc * o.shape[2] * o.shape[3] for o in outputs]
    gh = torch.tensor([o.shape[2] for o in outputs], device=dev)
    gw = torch.tensor([o.shape[3] for o in outputs], device=dev)
    offset = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], device=dev)
    grid = (ctr / st[..., None]).floor().long()
    gx = torch.minimum(grid[..., 0].clamp(min=0), gw[scale] - 1)
    gy = torch.minimum(grid[..., 1].clamp(min=0), gh[scale] - 1)
    cell = offset[scale] + (anchor * gh[scale] + gy) * gw[scale] + gx  # [B, M]
    # "later wins": drop a box if a later valid box of the same image has the same cell
    later = torch.triu(torch.ones(m, m, dtype=torch.bool, device=dev), diagonal=1)
    clash = (cell[:, :, None] == cell[:, None, :]) & valid[:, None, :] & later
    keep = valid & ~clash.any(-1)
    bi, mi = keep.nonzero(as_tuple=True)
    sel = lambda t: t[bi, mi]  # noqa: E731
    s, a = sel(scale), sel(anchor)
    txy = sel(ctr) / sel(st)[:, None] - torch.stack([sel(gx), sel(gy)], -1).float()
    twh = torch.log(sel(wh) / anc[s, a])
    area = float(image_hw[0]) * float(image_hw[1])
    box_w = (2 - sel(wh).prod(-1) / area) * sel(mix)
    return {"index": bi * sum(sizes) + sel(cell), "batch": bi, "box": mi, "scale": s,
            "anchor": a, "gx": sel(gx), "gy": sel(gy), "txy": txy, "twh": twh,
            "box_weight": box_w, "mix_weight": sel(mix)}


def ignore_mask(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor,
                ignore_iou: float) -> torch.Tensor:
    """[B, N] bool: predictions whose best IoU with a valid GT of their image > ``ignore_iou``."""
    if gt_boxes.shape[1] == 0:
        return torch.zeros(pred_boxes.shape[:2], dtype=torch.bool, device=pred_boxes.device)
    px1, py1, px2, py2 = (c[:, :, None] for c in pred_boxes.float().unbind(-1))
    gx1, gy1, gx2, gy2 = (c[:, None, :] for c in gt_boxes.float().unbind(-1))
    iw = (torch.minimum(px2, gx2) - torch.maximum(px1, gx1)).clamp_(min=0)
    ih = (torch.minimum(py2, gy2) - torch.maximum(py1, gy1)).clamp_(min=0)
    inter = iw * ih
    area_p = (px2 - px1).clamp(min=0) * (py2 - py1).clamp(min=0)
    area_g = (gx2 - gx1).clamp(min=0) * (gy2 - gy1).clamp(min=0)
    # inter / union > t  ⇔  inter·(1 + t) > t·(area_p + area_g): no division, no 0/0
    hit = inter * (1 + ignore_iou) > (area_p + area_g) * ignore_iou
    return (hit & gt_valid[:, None, :]).any(-1)


def yolo_loss(outputs: Sequence[torch.Tensor], batch: dict[str, Any], anchors: torch.Tensor,
              strides: Sequence[int] = STRIDES, ignore_iou: float = 0.7
              ) -> dict[str, torch.Tensor]:
    """The four YOLOv3 loss terms for raw ``outputs`` and a padded batch (module docstring)."""
    boxes, labels = batch["boxes"], batch["labels"]
    image_hw = tuple(batch["image"].shape[-2:]) if "image" in batch else None
    flat = _flatten(outputs)
    bsz, n, c = flat.shape
    k = c - 5
    tg = build_targets(outputs, boxes, labels, batch.get("weights"), anchors, strides, image_hw)
    cls_src = batch.get("class_targets")
    if cls_src is None:
        cls_src = F.one_hot(labels.clamp(min=0), k).float()
    cls_t = cls_src.float()[tg["batch"], tg["box"]]
    with torch.no_grad():
        valid = labels >= 0
        ignore = ignore_mask(decode_boxes(outputs, anchors, strides), boxes, valid, ignore_iou)
    obj_t = torch.zeros(bsz * n, device=flat.device)
    obj_w = (~ignore).float().view(-1)
    obj_t[tg["index"]] = 1.0
    obj_w[tg["index"]] = tg["mix_weight"]  # positives are never ignored
    obj = (F.binary_cross_entropy_with_logits(flat[..., 4].reshape(-1), obj_t, reduction="none")
           * obj_w).sum()
    pos = flat.view(-1, c)[tg["index"]]
    bw = tg["box_weight"][:, None]
    center = (F.binary_cross_entropy_with_logits(pos[:, :2], tg["txy"], reduction="none")
              * bw).sum()
    scale = ((pos[:, 2:4] - tg["twh"]).abs() * bw).sum()
    cls = (F.binary_cross_entropy_with_logits(pos[:, 5:], cls_t, reduction="none")
           * tg["mix_weight"][:, None]).sum()
    return {"obj": obj / bsz, "center": center / bsz, "scale": scale / bsz, "cls": cls / bsz}


def decode(outputs: Sequence[torch.Tensor], input_size: int | tuple[int, int],
           conf_thresh: float = 0.01, nms_thresh: float = 0.45, max_det: int = 100, *,
           anchors: Any = ANCHORS, strides: Sequence[int] = STRIDES,
           pre_nms_topk: int | None = 400) -> list[dict[str, torch.Tensor]]:
    """Detections per image in input pixels (clipped to the input): boxes, scores, labels."""
    ih, iw = (input_size, input_size) if isinstance(input_size, int) else input_size
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    flat = _flatten(outputs)
    k = flat.shape[-1] - 5
    boxes = decode_boxes(outputs, anchors, strides)
    scores = torch.sigmoid(flat[..., 4:5]) * torch.sigmoid(flat[..., 5:])  # [B, N, K]
    limit = torch.tensor([iw, ih, iw, ih], dtype=boxes.dtype, device=boxes.device)
    dets = []
    for b in range(flat.shape[0]):
        sc = scores[b].reshape(-1)
        cand = (sc > conf_thresh).nonzero().squeeze(1)
        if pre_nms_topk and cand.numel() > pre_nms_topk:
            cand = cand[sc[cand].topk(pre_nms_topk).indices]
        idx, lab = cand // k, cand % k
        bx, s = boxes[b, idx], sc[cand]
        keep = batched_nms(bx, s, lab, nms_thresh)[:max_det]
        dets.append({"boxes": torch.minimum(bx[keep].clamp(min=0), limit), "scores": s[keep],
                     "labels": lab[keep]})
    return dets


def to_original(dets: Sequence[dict[str, torch.Tensor]], orig_sizes: Any,
                input_size: int | tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """Map detections from the S×S input back to each (H, W) image (plain resize) and clip."""
    ih, iw = (input_size, input_size) if isinstance(input_size, int) else input_size
    out = []
    for d, hw in zip(dets, torch.as_tensor(orig_sizes).tolist()):
        h, w = float(hw[0]), float(hw[1])
        bx = d["boxes"].float() * d["boxes"].new_tensor([w / iw, h / ih, w / iw, h / ih])
        bx = torch.minimum(bx.clamp(min=0), bx.new_tensor([w, h, w, h]))
        out.append({**d, "boxes": bx})
    return out


@TASKS.register("yolo")
class YoloTask:
    """Args:
        model: the (possibly DDP-wrapped) YOLOv3 (``anchors`` and ``strides`` are read from it).
        num_classes: K.
        target_fns: the tricks' ``targets`` transforms of the per-box class targets [B, M, K].
        ignore_iou: objectness ignore threshold (0.7 GluonCV; Darknet 0.5).
        conf_thresh, nms_thresh, max_det, pre_nms_topk: evaluation decoding.
        metric: ``voc07`` (11-point), ``voc10`` (area) or ``coco`` (mAP@[.5:.95] by pycocotools;
            see ``coco_metrics``); eval_coords: ``original`` (default) or ``input``.
    """

    OPTIONS = dict(ignore_iou=0.7, conf_thresh=0.01, nms_thresh=0.45, max_det=100,
                   pre_nms_topk=400, metric="voc07", eval_coords="original")

    def __init__(self, model: nn.Module, num_classes: int,
                 target_fns: Iterable[Callable[[torch.Tensor], torch.Tensor]] = (),
                 **kw: Any) -> None:
        for key in kw:
            if key not in self.OPTIONS:
                raise AblateError(f"unknown yolo task option '{key}'"
                                  f"{did_you_mean(key, self.OPTIONS)}; "
                                  f"known: {', '.join(sorted(self.OPTIONS))}")
        self.opts = {**self.OPTIONS, **kw}
        if self.opts["metric"] != "coco":
            self.opts["metric"] = voc_metric_name(self.opts["metric"])
        if self.opts["eval_coords"] not in ("original", "input"):
            raise AblateError(f"yolo eval_coords must be 'original' or 'input', "
                              f"got '{self.opts['eval_coords']}'")
        if not 0 < float(self.opts["ignore_iou"]) <= 1:
            raise AblateError(f"yolo ignore_iou must be in (0, 1], got {self.opts['ignore_iou']}")
        self.model, self.num_classes, self.target_fns = model, num_classes, list(target_fns)

    @staticmethod
    def _geometry(model: nn.Module) -> tuple[torch.Tensor, tuple[int, ...]]:
        m = getattr(model, "module", model)
        anchors = getattr(m, "anchors", None)
        return (torch.tensor(ANCHORS, dtype=torch.float32) if anchors is None else anchors,
                tuple(getattr(m, "strides", STRIDES)))

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        target = batch.get("class_targets")
        if target is None:
            labels = batch["labels"]
            target = (F.one_hot(labels.clamp(min=0), self.num_classes).float()
                      * (labels >= 0)[..., None])
        for fn in self.target_fns:
            target = fn(target)
        return {**batch, "class_targets": target}

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        outputs = self.model(batch["image"])
        anchors, strides = self._geometry(self.model)
        return yolo_loss(outputs, batch, anchors, strides, float(self.opts["ignore_iou"]))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[dict[str, Any]],
                 autocast: Callable[[], Any]) -> dict[str, float]:
        """VOC mAP in percent over every process's share of the loader."""
        model.eval()
        anchors, strides = self._geometry(model)
        o = self.opts
        gts: list[dict] = []
        dets: list[dict] = []
        for batch in loader:
            size = tuple(batch["image"].shape[-2:])
            with autocast():
                outputs = model(batch["image"])
            d = decode(outputs, size, o["conf_thresh"], o["nms_thresh"], o["max_det"],
                       anchors=anchors, strides=strides, pre_nms_topk=o["pre_nms_topk"])
            gt = list(batch["gt"])
            if o["eval_coords"] == "original":
                d = to_original(d, batch["orig_size"], size)
            else:  # the reference code: GT resized to the input, detections left there
                gt = [{**g, "boxes": np.asarray(g["boxes"], np.float64).reshape(-1, 4)
                       * np.array([size[1] / hw[1], size[0] / hw[0]] * 2)}
                      for g, hw in zip(gt, torch.as_tensor(batch["orig_size"]).tolist())]
            gts += gt
            dets += [{k: v.detach().cpu().numpy() for k, v in x.items()} for x in d]
        gts, dets = _gather(gts), _gather(dets)
        if o["metric"] == "coco":  # the annotation file's GT needs original coordinates
            official = official_ground_truth(loader) if o["eval_coords"] == "original" else None
            return coco_metrics(gts, dets, self.num_classes, official)
        ev = VOCEvaluator(self.num_classes, metric=o["metric"], pixel_inclusive=False)
        ev.update(gts, dets)
        return {"map": 100.0 * float(ev.compute()["map"])}  # NaN when no image has GT


def voc_metric_name(metric: str) -> str:
    """A VOC metric name (``voc07``, ``voc10``, …) checked; ``coco`` is the other choice."""
    key = str(metric).lower()
    if key not in VOC_METRICS:
        choices = sorted({*VOC_METRICS, "coco"})
        raise AblateError(f"unknown detection metric '{metric}'{did_you_mean(key, choices)}; "
                          f"choose one of {choices}")
    return key


def coco_metrics(gts: list[dict], dets: list[dict], num_classes: int,
                 official: tuple[Any, list[int]] | None = None) -> dict[str, float]:
    """COCO mAP@[.5:.95] (``map``), AP50, AP75 and APs/m/l in percent, by COCOeval.

    With ``official`` (``ablate.data.datasets.coco.official_ground_truth``: the annotation
    file's ``COCO`` and the label → category ids) the detections are scored against the
    annotation file itself, restricted to the evaluated images: boxes as annotated, tiny boxes
    kept, annotation areas, crowd flags — the official figures, equal to ``ablate evaluate
    --data coco`` on the same detections; ``coco_official`` is 1. Otherwise the ground truth
    is rebuilt from what the loader gives (boxes clipped to the image, those under the
    dataset's ``min_size`` dropped, crowd regions as ``iscrowd``, box areas): an approximation,
    ``coco_official`` 0.
    """
    from ablate.eval.coco_map import build_coco_gt, coco_eval, detections_to_coco_results

    if official is not None:
        coco, cat_ids = official
        ids = [int(g["image_id"]) for g in gts]
        stats = coco_eval(coco, detections_to_coco_results(dets, ids, cat_ids),
                          img_ids=ids)["stats"]
    else:
        ids = list(range(1, len(gts) + 1))
        gt = build_coco_gt(gts, ids, category_names=[str(k) for k in range(num_classes)])
        results = detections_to_coco_results(dets, ids, list(range(1, num_classes + 1)))
        stats = coco_eval(gt, results)["stats"]
    names = {"map": "AP", "ap50": "AP50", "ap75": "AP75", "aps": "APs", "apm": "APm",
             "apl": "APl"}
    return {**{k: 100.0 * stats[v] for k, v in names.items()},
            "coco_official": float(official is not None)}


def _gather(items: list[dict]) -> list[dict]:
    """Concatenate a list across processes (evaluation shards the loader)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for p in parts for x in p]
