"""PASCAL VOC detection mAP, exactly as the official VOC devkit computes it.

Reference: the VOC devkit's ``VOCevaldet.m`` (Everingham et al., "The PASCAL Visual Object
Classes (VOC) Challenge", IJCV 2010) and its Python port ``voc_eval.py`` / ``voc_ap`` from
py-faster-rcnn, which Detectron, mmdetection and GluonCV copy.

Per class, detections are ranked by score (descending, stable). Each detection is compared with
the ground truth (GT) of the same image and class; the GT with the highest IoU is its only
candidate. If that IoU exceeds the threshold: a *difficult* GT makes the detection ignored, an
unmatched GT makes it a true positive (and marks the GT matched), an already matched GT makes it
a duplicate false positive. A detection with no candidate above the threshold is a false
positive. Difficult GT do not count as positives.

Because a duplicate never falls back to its second-best GT, the greedy matching reduces to "the
highest-ranked detection whose best GT is g is the TP for g", which vectorises: this module
evaluates 500k detections without a per-detection Python loop.

Two AP definitions:

* ``"voc07"``: 11-point interpolated AP, thresholds ``np.arange(0., 1.1, 0.1)`` as in the Python
  port (so t=0.3 is 0.30000000000000004 and a recall of exactly 0.3 does not reach it).
* ``"voc2010"``: area under the precision envelope made monotone from the right, summed where
  recall changes (``voc_ap(..., use_07_metric=False)``; VOC2010-2012).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ablate.errors import AblateError, did_you_mean

__all__ = ["voc_eval", "voc_ap", "box_iou_voc", "VOCEvaluator", "METRICS"]

# Accepted metric names -> canonical name.
METRICS = {
    "voc07": "voc07", "voc2007": "voc07", "11point": "voc07",
    "voc2010": "voc2010", "voc10": "voc2010", "voc12": "voc2010", "voc2012": "voc2010",
    "area": "voc2010",
}


def _np(x: Any, dtype=None) -> np.ndarray:
    """Torch tensor / list / array -> numpy array (no copy when possible)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _metric(metric: str) -> str:
    key = str(metric).lower()
    if key not in METRICS:
        raise AblateError(f"unknown VOC metric '{metric}'{did_you_mean(metric, METRICS)}; "
                          f"choose one of {sorted(set(METRICS))}")
    return METRICS[key]


def box_iou_voc(a: Any, b: Any, pixel_inclusive: bool = True) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` [N,4] and ``b`` [M,4] (xyxy) with the devkit's formula.

    Args:
        a, b: boxes as arrays or tensors.
        pixel_inclusive: add 1 to widths/heights (VOC's inclusive 1-based pixel indices).
    Returns:
        float64 array [N, M].
    """
    a = _np(a, np.float64).reshape(-1, 4)[:, None, :]
    b = _np(b, np.float64).reshape(-1, 4)[None, :, :]
    return _iou(a, b, 1.0 if pixel_inclusive else 0.0)


def _iou(a: np.ndarray, b: np.ndarray, one: float) -> np.ndarray:
    # Same operation order as the devkit so results agree bit for bit.
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + one, 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + one, 0.0)
    inters = iw * ih
    uni = ((a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
           + (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one) - inters)
    # Two degenerate boxes would give 0/0; the devkit would produce NaN, we say "no overlap".
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(uni > 0, inters / np.where(uni > 0, uni, 1.0), 0.0)


def voc_ap(rec: np.ndarray, prec: np.ndarray, metric: str = "voc07") -> float:
    """AP from a recall/precision curve (the devkit's ``voc_ap``).

    Args:
        rec, prec: recall and precision at each ranked detection.
        metric: ``"voc07"`` (11-point) or ``"voc2010"`` (area under the envelope).
    Returns:
        The average precision.
    """
    rec, prec = np.asarray(rec, np.float64), np.asarray(prec, np.float64)
    if _metric(metric) == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            sel = rec >= t
            ap += (float(np.max(prec[sel])) if sel.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope, non-increasing from the right
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _concat(items: Sequence[Mapping[str, Any]], kind: str, num_classes: int):
    """Concatenate per-image dicts into flat arrays plus an image-index array."""
    boxes, labels, extra, counts = [], [], [], []
    key = "difficult" if kind == "gt" else "scores"
    for i, d in enumerate(items):
        try:
            b = _np(d["boxes"], np.float64).reshape(-1, 4)
            lab = _np(d["labels"]).reshape(-1)
            e = d.get(key) if kind == "gt" else d["scores"]
        except (KeyError, TypeError, ValueError) as exc:
            want = "'boxes' [N,4], 'labels' [N]" + ("" if kind == "gt" else ", 'scores' [N]")
            raise AblateError(f"{kind} of image {i}: expected a dict with {want} ({exc!r})") from None
        e = np.zeros(len(b), bool) if e is None else _np(e).reshape(-1)
        if not len(b) == len(lab) == len(e):
            raise AblateError(f"{kind} of image {i}: boxes/labels/{key} lengths differ "
                              f"({len(b)}, {len(lab)}, {len(e)})")
        boxes.append(b)
        labels.append(lab)
        extra.append(e)
        counts.append(len(b))
    if not items:
        return np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    lab = np.concatenate(labels).astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise AblateError(f"{kind} label out of range [0, {num_classes}): "
                          f"min {lab.min()}, max {lab.max()}")
    img = np.repeat(np.arange(len(items)), counts)
    return np.concatenate(boxes), lab, np.concatenate(extra), img


def voc_eval(gts: Sequence[Mapping[str, Any]], dets: Sequence[Mapping[str, Any]], num_classes: int,
             metric: str = "voc07", iou_thresh: float = 0.5, strict: bool = True,
             pixel_inclusive: bool = True) -> dict:
    """VOC devkit mAP over a dataset.

    Args:
        gts: one dict per image: ``boxes`` [G,4] xyxy, ``labels`` [G] (0-based), optional
            ``difficult`` [G] bool.
        dets: one dict per image (same order): ``boxes`` [D,4], ``scores`` [D], ``labels`` [D].
        num_classes: number of classes.
        metric: ``"voc07"`` (11-point) or ``"voc2010"`` (area).
        iou_thresh: IoU threshold for a match.
        strict: match when IoU > thresh (devkit); False uses >= (GluonCV).
        pixel_inclusive: +1 in widths/heights (devkit); False for continuous coordinates.
    Returns:
        ``{"ap": [C] (NaN for classes without non-difficult GT), "map": float,
        "npos": [C], "recall": list of [D_c], "precision": list of [D_c]}``.
    """
    metric = _metric(metric)
    if len(gts) != len(dets):
        raise AblateError(f"got ground truth for {len(gts)} images but detections for {len(dets)}")
    gbox, glab, gdiff, gimg = _concat(gts, "gt", num_classes)
    dbox, dlab, dscore, dimg = _concat(dets, "det", num_classes)
    gdiff = gdiff.astype(bool)
    dscore = dscore.astype(np.float64)
    one = 1.0 if pixel_inclusive else 0.0
    nd = len(dbox)

    # Candidate (detection, GT) pairs: same image and class. GT sorted stably by (image, class)
    # keeps annotation order inside a group, so argmax ties pick the devkit's GT.
    gkey = gimg * num_classes + glab
    gorder = np.argsort(gkey, kind="stable")
    gkey_sorted = gkey[gorder]
    dkey = dimg * num_classes + dlab
    start = np.searchsorted(gkey_sorted, dkey, "left")
    cnt = np.searchsorted(gkey_sorted, dkey, "right") - start
    seg = np.concatenate(([0], np.cumsum(cnt)))
    pdet = np.repeat(np.arange(nd), cnt)
    pgt = gorder[start[pdet] + np.arange(seg[-1]) - seg[pdet]]
    iou = _iou(dbox[pdet], gbox[pgt], one)

    # Best GT per detection (first index on ties, like np.argmax).
    has = cnt > 0
    ovmax = np.full(nd, -np.inf)
    jmax = np.full(nd, -1)
    if has.any():
        starts = seg[:-1][has]
        ovmax[has] = np.maximum.reduceat(iou, starts)
        first = np.where(iou == ovmax[pdet], np.arange(len(iou)), len(iou))
        jmax[has] = pgt[np.minimum.reduceat(first, starts)]
    hit = (ovmax > iou_thresh) if strict else (ovmax >= iou_thresh)

    # Rank within class: by score descending, stable in (image, detection) order.
    order = np.lexsort((-dscore, dlab))
    rank = np.empty(nd, np.int64)
    rank[order] = np.arange(nd)
    tp = np.zeros(nd)
    fp = (~hit).astype(np.float64)
    ignored = np.zeros(nd, bool)
    ignored[hit] = gdiff[jmax[hit]]
    pos = np.flatnonzero(hit & ~ignored)
    if pos.size:
        # The highest-ranked detection claiming a GT is its TP; later claimants are duplicates.
        srt = pos[np.lexsort((rank[pos], jmax[pos]))]
        is_first = np.ones(len(srt), bool)
        is_first[1:] = jmax[srt[1:]] != jmax[srt[:-1]]
        tp[srt[is_first]] = 1.0
        fp[srt[~is_first]] = 1.0

    npos = np.bincount(glab[~gdiff], minlength=num_classes)
    bounds = np.searchsorted(dlab[order], np.arange(num_classes + 1))
    tp_s, fp_s = tp[order], fp[order]
    ap = np.full(num_classes, np.nan)
    recs, precs = [], []
    eps = np.finfo(np.float64).eps
    for c in range(num_classes):
        ctp = np.cumsum(tp_s[bounds[c]:bounds[c + 1]])
        cfp = np.cumsum(fp_s[bounds[c]:bounds[c + 1]])
        prec = ctp / np.maximum(ctp + cfp, eps)
        rec = ctp / npos[c] if npos[c] > 0 else np.full(len(ctp), np.nan)
        recs.append(rec), precs.append(prec)
        if npos[c] > 0:
            ap[c] = voc_ap(rec, prec, metric)
    valid = ~np.isnan(ap)
    return {"ap": ap, "map": float(ap[valid].mean()) if valid.any() else float("nan"),
            "npos": npos, "recall": recs, "precision": precs}


class VOCEvaluator:
    """Streaming VOC mAP: ``update`` per image (or batch) during evaluation, then ``compute``.

    Args:
        num_classes, metric, iou_thresh, strict, pixel_inclusive: as in :func:`voc_eval`.
    """

    def __init__(self, num_classes: int, metric: str = "voc07", iou_thresh: float = 0.5,
                 strict: bool = True, pixel_inclusive: bool = True):
        self.num_classes = num_classes
        self.metric = _metric(metric)
        self.kwargs = dict(iou_thresh=iou_thresh, strict=strict, pixel_inclusive=pixel_inclusive)
        self.reset()

    def reset(self) -> None:
        """Forget all images seen so far."""
        self._gts: list[dict] = []
        self._dets: list[dict] = []

    def __len__(self) -> int:
        return len(self._gts)

    def update(self, gt: Mapping | Sequence[Mapping], det: Mapping | Sequence[Mapping]) -> None:
        """Add one image (two dicts) or a batch (two equally long sequences of dicts).

        Arrays are copied to CPU numpy now so GPU tensors are not kept alive.
        """
        if isinstance(gt, Mapping) != isinstance(det, Mapping):
            raise AblateError("update() needs both gt and det as dicts, or both as lists")
        gts, dets = ([gt], [det]) if isinstance(gt, Mapping) else (list(gt), list(det))
        if len(gts) != len(dets):
            raise AblateError(f"update() got {len(gts)} ground truths but {len(dets)} detections")
        for g, d in zip(gts, dets):
            self._gts.append({k: _np(v).copy() for k, v in g.items()
                              if k in ("boxes", "labels", "difficult")})
            self._dets.append({k: _np(v).copy() for k, v in d.items()
                               if k in ("boxes", "labels", "scores")})

    def compute(self) -> dict:
        """Evaluate everything added so far; same result as :func:`voc_eval`."""
        return voc_eval(self._gts, self._dets, self.num_classes, metric=self.metric, **self.kwargs)
