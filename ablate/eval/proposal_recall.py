"""Proposal recall: average recall (AR@N) of region proposals, two ways.

``average_recall`` is MMDetection's ``eval_recalls`` (v1, ``mmdet/core/evaluation/recall.py``,
the number of the benchmark's Table 9): per image, the top-N proposals by score; a greedy
one-to-one matching — repeatedly take the ground-truth box whose best remaining proposal has
the highest IoU, record that IoU, remove both — so each box and each proposal is used once;
recall(t) = the share of all ground-truth boxes (crowd / difficult ones left out) whose
recorded IoU is ≥ t, for t = 0.50, 0.55, …, 0.95; AR@N = the mean over t. IoU uses continuous
coordinates (``x2 − x1``, the convention of the boxes here); MMDetection v1 adds one pixel to
widths and heights (``pixel_inclusive=True`` gives that).

``coco_average_recall`` is the COCO-style alternative: ``COCOeval`` (pycocotools) with
``useCats = 0`` and ``maxDets`` = the Ns, AR = the mean over IoU thresholds of the recall at
area "all" — what ``COCOeval.summarize`` prints as AR@N, with COCO's matching (greedy by
score, crowd regions ignored).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ablate.errors import AblateError

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
PROPOSAL_NUMS = (100, 300, 1000)


def proposal_nums(value: Any) -> tuple[int, ...]:
    """The Ns of AR@N as sorted distinct positive integers, or an ``AblateError``."""
    nums = list(value) if isinstance(value, (list, tuple)) else [value]
    if not nums or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                           for n in nums):
        raise AblateError(f"proposal_nums={value!r}: must be a list of positive integers")
    return tuple(sorted(set(nums)))


def box_iou(a: np.ndarray, b: np.ndarray, pixel_inclusive: bool = False) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1y1x2y2 boxes."""
    one = 1.0 if pixel_inclusive else 0.0
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt + one, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2] + one, 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2] + one, 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def matched_ious(ious: np.ndarray) -> np.ndarray:
    """MMDetection's greedy one-to-one matching of an image's [G, P] IoU matrix: one IoU per
    ground-truth box, in the order the boxes were taken (−1 once no proposal is left)."""
    ious = ious.copy()
    out = np.zeros(ious.shape[0])
    if ious.shape[1] == 0:
        return out
    for j in range(ious.shape[0]):
        best = ious.argmax(axis=1)
        best_iou = ious[np.arange(ious.shape[0]), best]
        g = int(best_iou.argmax())
        out[j] = best_iou[g]
        ious[g, :] = -1
        ious[:, best[g]] = -1
    return out


def _sorted(boxes: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if scores is None:
        return boxes
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return boxes[order]


def recalls(gts: Sequence[np.ndarray], proposals: Sequence[np.ndarray],
            scores: Sequence[np.ndarray] | None = None,
            nums: Sequence[int] = PROPOSAL_NUMS, thresholds: Sequence[float] = IOU_THRESHOLDS,
            pixel_inclusive: bool = False) -> np.ndarray:
    """Recall [len(nums), len(thresholds)] over all images (MMDetection's ``_recalls``).

    Args:
        gts: per image, the ground-truth boxes that count ([G, 4]; leave crowd / difficult
            boxes out).
        proposals: per image, proposal boxes [P, 4].
        scores: per image, the proposals' scores (they are ranked by them); None: already
            ranked.
        nums: the Ns of AR@N.
        thresholds: IoU thresholds.
    """
    if len(gts) != len(proposals) or (scores is not None and len(scores) != len(gts)):
        raise AblateError(f"proposal recall: {len(gts)} images of ground truth but "
                          f"{len(proposals)} of proposals")
    nums = [int(n) for n in nums]
    if not nums or min(nums) < 1:
        raise AblateError(f"proposal recall: the Ns must be positive integers, got {nums}")
    ranked = [_sorted(p, None if scores is None else scores[i]) for i, p in enumerate(proposals)]
    all_ious = [box_iou(g, p[:max(nums)], pixel_inclusive) for g, p in zip(gts, ranked)]
    total = sum(len(np.asarray(g).reshape(-1, 4)) for g in gts)
    out = np.zeros((len(nums), len(thresholds)))
    if total == 0:
        return out
    for k, n in enumerate(nums):
        best = np.concatenate([matched_ious(ious[:, :n]) for ious in all_ious])
        for i, t in enumerate(thresholds):
            out[k, i] = (best >= t).sum() / total
    return out


def average_recall(gts: Sequence[np.ndarray], proposals: Sequence[np.ndarray],
                   scores: Sequence[np.ndarray] | None = None,
                   nums: Sequence[int] = PROPOSAL_NUMS, pixel_inclusive: bool = False
                   ) -> dict[int, float]:
    """AR@N (fractions) for each N: the mean of ``recalls`` over the IoU thresholds."""
    r = recalls(gts, proposals, scores, nums, IOU_THRESHOLDS, pixel_inclusive)
    return {int(n): float(r[k].mean()) for k, n in enumerate(nums)}


def coco_average_recall(coco_gt: Any, results: list[dict], nums: Sequence[int] = PROPOSAL_NUMS,
                        img_ids: Sequence[int] | None = None) -> dict[int, float]:
    """AR@N (fractions) by pycocotools' ``COCOeval`` with ``useCats = 0``.

    Args:
        coco_gt: a ``COCO`` object, an annotation file or a dataset dict.
        results: ``{image_id, bbox [x, y, w, h], score}`` (a ``category_id`` is ignored; one
            of the ground truth's is filled in, as ``loadRes`` needs one).
        nums: the Ns (``maxDets``).
        img_ids: evaluate these images (default: every image of ``coco_gt``).
    """
    from pycocotools.cocoeval import COCOeval

    from ablate.eval.coco_map import _quiet, load_coco_gt

    gt = load_coco_gt(coco_gt)
    nums = sorted(int(n) for n in nums)
    if not results:
        return {n: 0.0 for n in nums}
    cat = min(gt.getCatIds())
    known = set(gt.getImgIds())
    unknown = {int(r["image_id"]) for r in results} - known
    if unknown:
        raise AblateError(f"proposals mention {len(unknown)} image ids absent from the ground "
                          f"truth, e.g. {sorted(unknown)[:5]}")
    with _quiet(False):
        dt = gt.loadRes([{"image_id": int(r["image_id"]), "category_id": cat,
                          "bbox": [float(v) for v in r["bbox"]], "score": float(r["score"])}
                         for r in results])
        ev = COCOeval(gt, dt, "bbox")
        ev.params.useCats = 0
        ev.params.maxDets = nums
        if img_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in img_ids)
        ev.evaluate()
        ev.accumulate()
    rec = ev.eval["recall"]  # [T, K (1 without categories), A, M]
    out = {}
    for m, n in enumerate(nums):
        r = rec[:, 0, 0, m]
        r = r[r > -1]
        out[n] = float(r.mean()) if r.size else 0.0
    return out


def coco_gt_boxes(coco: Any, image_ids: Sequence[int]) -> list[np.ndarray]:
    """Per image, the annotation file's non-crowd boxes as x1y1x2y2 (what MMDetection's
    proposal recall counts on COCO)."""
    out = []
    for i in image_ids:
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[int(i)])) if not a["iscrowd"]]
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        out.append(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
    return out
