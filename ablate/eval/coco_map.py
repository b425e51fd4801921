"""COCO detection mAP: the official ``COCOeval`` (evaluate -> accumulate -> summarize).

Reference: Lin et al., "Microsoft COCO: Common Objects in Context" (ECCV 2014) and the
cocodataset/cocoapi ``COCOeval``. Two engines: pycocotools itself (bit-exact official
numbers), and faster-coco-eval's ``COCOeval_faster`` (the same algorithm with
``evaluateImg``/``accumulate`` in C++, detectron2's ``COCOeval_opt`` lineage), 5.7x faster on
5,000 images (benchmarks/RESULTS.md). They differ in one place only: pycocotools' precision is
tp / (tp + fp + ``np.spacing(1)``), faster-coco-eval's tp / (tp + fp), so where tp + fp = 1 the
precision is 1 / (1 + 2^-52) against 1 and the summary numbers differ by ~1e-16
(tests/eval/test_coco_map.py checks exactly this). ``backend="auto"``
takes the faster one when it is installed. This module only adds names, per-category AP, quiet
output, input validation and the array -> results-dict conversion.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ablate.errors import AblateError, did_you_mean
from ablate.eval.detections_io import read_coco_results, validate_coco_results

__all__ = ["coco_eval", "detections_to_coco_results", "build_coco_gt", "load_coco_gt",
           "STAT_NAMES", "BACKENDS", "resolve_backend"]

# Order of COCOeval.stats for iouType "bbox"/"segm".
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
BACKENDS = ("auto", "faster_coco_eval", "pycocotools")


def _quiet(verbose: bool):
    # pycocotools prints progress with print(); swallow it unless asked.
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def load_coco_gt(coco_gt: Any, verbose: bool = False):
    """A ``COCO`` object from a ``COCO``, a path to an annotation JSON, or a dataset dict."""
    from pycocotools.coco import COCO

    if isinstance(coco_gt, COCO):
        return coco_gt
    if isinstance(coco_gt, Mapping):
        gt = COCO()
        gt.dataset = dict(coco_gt)
        with _quiet(verbose):
            gt.createIndex()
        return gt
    if isinstance(coco_gt, (str, os.PathLike)):
        if not os.path.isfile(coco_gt):
            raise AblateError(f"COCO annotation file not found: {coco_gt}")
        try:
            with _quiet(verbose):
                return COCO(os.fspath(coco_gt))
        except (ValueError, KeyError, TypeError) as exc:
            raise AblateError(f"{coco_gt}: not a COCO annotation file ({exc!r})") from None
    raise AblateError(f"coco_gt must be a COCO object, a path or a dict, got {type(coco_gt).__name__}")


def resolve_backend(name: str) -> str:
    """``auto`` → the engine in use; an unknown name → ``AblateError``."""
    if name not in BACKENDS:
        raise AblateError(f"unknown COCO evaluation backend '{name}'{did_you_mean(name, BACKENDS)}"
                          f" (use one of {', '.join(BACKENDS)})")
    if name == "auto":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            return "pycocotools"
        return "faster_coco_eval"
    return name


def _faster_gt(gt):
    """faster-coco-eval's ``COCO`` over the same dataset dict (built once per ground truth)."""
    fast = getattr(gt, "_ablate_faster_gt", None)
    if fast is None:
        from faster_coco_eval import COCO as FasterCOCO

        fast = FasterCOCO(gt.dataset)
        gt._ablate_faster_gt = fast
    return fast


def _cocoeval(gt, results: list, iou_type: str, backend: str, img_ids, verbose: bool):
    """The evaluated ``COCOeval`` of one engine (``results`` are consumed: loadRes edits them)."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCOeval_faster

        fgt = _faster_gt(gt)
        ev = COCOeval_faster(fgt, fgt.loadRes(results), iou_type,
                             print_function=print if verbose else (lambda *a, **k: None))
    else:
        from pycocotools.cocoeval import COCOeval

        with _quiet(verbose):
            ev = COCOeval(gt, gt.loadRes(results), iou_type)
    if img_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in img_ids)
    with _quiet(verbose):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_eval(coco_gt: Any, results: Any, iou_type: str = "bbox", verbose: bool = False,
              img_ids: Sequence[int] | None = None, backend: str = "auto") -> dict:
    """Official COCO evaluation with named outputs.

    Args:
        coco_gt: ``COCO`` object, path to an annotation JSON, or a COCO dataset dict.
        results: list of ``{image_id, category_id, bbox [x,y,w,h], score}`` or a path to a
            results JSON. Not modified.
        iou_type: ``"bbox"`` or ``"segm"``.
        verbose: let pycocotools print its progress and summary table.
        img_ids: evaluate only these images (default: all images of ``coco_gt``).
        backend: ``"pycocotools"``, ``"faster_coco_eval"`` or ``"auto"`` (the faster one
            when installed); the same numbers to 1e-15 (module docstring).
    Returns:
        ``{"stats": {name: float} for the 12 names in STAT_NAMES,
        "per_category": {category name: AP@[.5:.95], area all, maxDets 100; NaN without GT}}``.
        Empty results give all-zero stats and 0 for every category with GT.
    """
    if iou_type not in IOU_TYPES:
        raise AblateError(f"unknown iou_type '{iou_type}'{did_you_mean(iou_type, IOU_TYPES)}")
    backend = resolve_backend(backend)
    gt = load_coco_gt(coco_gt, verbose)
    if isinstance(results, (str, os.PathLike)):
        results = read_coco_results(results, need_bbox=iou_type == "bbox")
    else:
        validate_coco_results(results, "results", need_bbox=iou_type == "bbox")
    known = set(gt.getImgIds())
    unknown = {r["image_id"] for r in results} - known
    if unknown:
        raise AblateError(f"results mention {len(unknown)} image ids absent from the ground "
                          f"truth, e.g. {sorted(unknown)[:5]}")
    cats = set(gt.getCatIds())
    bad = {r["category_id"] for r in results} - cats
    if bad:
        raise AblateError(f"results mention unknown category ids {sorted(bad)[:5]}; "
                          f"ground truth has {sorted(cats)[:10]}")
    names = _category_names(gt)
    if not results:
        # loadRes crashes on [] and COCOeval would report -1; no detections means zero AP.
        return {"stats": {n: 0.0 for n in STAT_NAMES},
                "per_category": {names[c]: (0.0 if gt.getAnnIds(imgIds=list(img_ids or []),
                                                                 catIds=[c]) else float("nan"))
                                 for c in sorted(cats)}}
    # loadRes writes 'area', 'id', 'segmentation' into each dict: give it copies.
    ev = _cocoeval(gt, [dict(r) for r in results], iou_type, backend, img_ids, verbose)
    stats = {n: float(v) for n, v in zip(STAT_NAMES, ev.stats)}
    # precision: [T iou, R recall, K cat, A area, M maxDets]; -1 marks "no GT".
    prec = ev.eval["precision"]
    m = list(ev.params.maxDets).index(100) if 100 in ev.params.maxDets else -1
    per_cat = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, m]
        p = p[p > -1]
        per_cat[names[cat_id]] = float(np.mean(p)) if p.size else float("nan")
    return {"stats": stats, "per_category": per_cat}


def _category_names(gt) -> dict[int, str]:
    names: dict[int, str] = {}
    seen: set[str] = set()
    for c in sorted(gt.getCatIds()):
        name = str(gt.cats[c].get("name", c))
        names[c] = name if name not in seen else f"{name}_{c}"  # keep duplicate names distinct
        seen.add(names[c])
    return names


def _np(x: Any, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def detections_to_coco_results(dets: Sequence[Mapping[str, Any]], image_ids: Sequence[int],
                               label_to_category_id: Sequence[int] | Mapping[int, int]) -> list:
    """Per-image detections -> COCO results dicts.

    Args:
        dets: one dict per image: ``boxes`` [D,4] xyxy in original image coordinates,
            ``scores`` [D], ``labels`` [D] (0-based contiguous).
        image_ids: COCO image id of each entry of ``dets``.
        label_to_category_id: contiguous label -> COCO category id (list or dict).
    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (Python types).
    """
    if len(dets) != len(image_ids):
        raise AblateError(f"{len(dets)} detection entries but {len(image_ids)} image ids")
    if isinstance(label_to_category_id, Mapping):
        n = max(label_to_category_id, default=-1) + 1
        lut = np.full(n, -1, np.int64)
        for k, v in label_to_category_id.items():
            lut[int(k)] = int(v)
    else:
        lut = np.asarray(list(label_to_category_id), np.int64)
    out: list[dict] = []
    for d, img in zip(dets, image_ids):
        boxes = _np(d["boxes"], np.float64).reshape(-1, 4)
        labels = _np(d["labels"]).reshape(-1).astype(np.int64)
        scores = _np(d["scores"], np.float64).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= len(lut)
                            or (lut[labels] < 0).any()):
            raise AblateError(f"image {img}: label without a category id mapping "
                              f"(labels {sorted(set(labels.tolist()))[:10]})")
        # COCO bbox is [x, y, w, h] in continuous coordinates: w = x2 - x1 (no +1).
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
        img = int(img)
        out.extend({"image_id": img, "category_id": c, "bbox": b, "score": s}
                   for c, b, s in zip(lut[labels].tolist(), xywh, scores.tolist()))
    return out


def build_coco_gt(gts: Sequence[Mapping[str, Any]], image_ids: Sequence[int] | None = None,
                  category_names: Sequence[str] | None = None,
                  category_ids: Sequence[int] | None = None,
                  image_sizes: Sequence[tuple[int, int]] | None = None, verbose: bool = False):
    """A pycocotools ``COCO`` ground truth from per-image arrays (e.g. to COCO-evaluate VOC).

    Args:
        gts: one dict per image: ``boxes`` [G,4] xyxy, ``labels`` [G] 0-based, optional
            ``difficult`` [G] (stored as ``iscrowd=1``: neither counted nor penalised, the
            closest COCO analogue) and optional ``area`` [G] (default box area).
        image_ids: COCO id per image (default 1..N).
        category_names: name per label (default "class<i>").
        category_ids: COCO id per label (default label + 1).
        image_sizes: (height, width) per image (default 0, 0; unused by the bbox metric).
    Returns:
        pycocotools ``COCO`` with its index built.
    """
    image_ids = list(range(1, len(gts) + 1)) if image_ids is None else [int(i) for i in image_ids]
    n_labels = max((int(_np(g["labels"]).max(initial=-1)) for g in gts), default=-1) + 1
    if category_names is None:
        category_names = [f"class{i}" for i in range(max(n_labels, len(category_ids or [])))]
    category_ids = (list(range(1, len(category_names) + 1)) if category_ids is None
                    else [int(c) for c in category_ids])
    if n_labels > len(category_ids) or len(category_ids) != len(category_names):
        raise AblateError(f"{n_labels} labels used but {len(category_ids)} category ids and "
                          f"{len(category_names)} names given")
    images, anns = [], []
    for i, (g, img) in enumerate(zip(gts, image_ids)):
        h, w = image_sizes[i] if image_sizes is not None else (0, 0)
        images.append({"id": img, "height": int(h), "width": int(w)})
        boxes = _np(g["boxes"], np.float64).reshape(-1, 4)
        labels = _np(g["labels"]).reshape(-1).astype(np.int64)
        crowd = (_np(g["difficult"]).reshape(-1).astype(bool) if g.get("difficult") is not None
                 else np.zeros(len(boxes), bool))
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        area = (_np(g["area"], np.float64).reshape(-1) if g.get("area") is not None
                else xywh[:, 2] * xywh[:, 3])
        for b, lab, a, c in zip(xywh.tolist(), labels.tolist(), area.tolist(), crowd.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": category_ids[lab],
                         "bbox": b, "area": a, "iscrowd": int(c)})
    cats = [{"id": c, "name": str(n)} for c, n in zip(category_ids, category_names)]
    return load_coco_gt({"images": images, "annotations": anns, "categories": cats},
                        verbose)
