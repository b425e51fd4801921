"""``ablate evaluate``: score any detector's output against a dataset's ground truth.

Inputs and conventions:

* ``--data voc``: ground truth from ``<root>/VOCdevkit/VOC<year>/`` (``ImageSets/Main/<split>.txt``
  and ``Annotations/``), boxes in the devkit's 1-based inclusive pixel convention. Detections are

  - a folder of devkit files ``comp4_det_<split>_<class>.txt`` (``image_id score xmin ymin xmax
    ymax``, 1-based devkit coordinates). They are compared as read, in the GT's own convention,
    with the devkit's ``+1`` IoU (``pixel_inclusive=True``): exactly ``VOCevaldet``. A class
    without a file has no detections (AP 0) and is listed in ``missing_class_files``; a file
    naming an unknown class, or no file at all, is an error.
  - or a COCO-style results JSON: ``category_id`` = 1-based index in the class list (VOC_CLASSES
    order by default), ``bbox`` = ``[x, y, w, h]`` in 0-based continuous coordinates (devkit box
    ``[x + 1, y + 1, x + w, y + h]``), ``image_id`` = the devkit id as an integer with any ``_``
    removed (``"000005"`` -> 5, ``"2008_000123"`` -> 2008000123).

  Class names: ``class_names`` if given; else FashionScenes' classes when ``root`` is a
  FashionScenes build (its ``.complete`` marker), else the 20 VOC classes.
  ``--metric coco`` on VOC data converts the GT to COCO (continuous boxes ``[x-1, y-1, x2, y2]``,
  area = box area, difficult -> ``iscrowd``: ignored, as in the devkit) and runs ``COCOeval``.
* ``--data coco``: ``<root>/annotations/instances_<split>.json`` (images are not needed) and a
  results JSON, evaluated by ``COCOeval`` unchanged; ``class_names`` is ignored.
* ``--metric proposals`` (an RPN's output): COCO-layout ground truth (``--data coco``; a
  FashionScenes build has that layout too) and a COCO results JSON of proposals (``bbox``,
  ``score``; ``category_id`` is ignored). Reports ``ar`` — MMDetection's AR@N over the
  annotation file's non-crowd boxes — and ``coco_ar`` — COCOeval's with ``useCats = 0`` — for
  each N of ``proposal_nums`` (``ablate.eval.proposal_recall``), in percent.
* ``COCOeval`` is faster-coco-eval's C++ one by default, pycocotools' with
  ``coco_backend="pycocotools"`` (``--coco-backend``): the same numbers to 1e-15 (see
  ``ablate.eval.coco_map``).

Ties in score are ranked by the image's position in the split, then file order. Results are
percentages; AP of a class without (non-difficult) GT and COCO stats of -1 (no GT in that area
range) are ``None``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ablate.errors import AblateError, did_you_mean

__all__ = ["evaluate", "format_table", "DATA", "METRICS"]

DATA = ("voc", "coco")
METRICS = ("voc07", "voc10", "coco", "proposals")
_EMPTY = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) or x < 0 else float(x) * 100.0


def _metric(data: str, metric: str | None) -> str:
    from ablate.eval.voc_map import METRICS as VOC_ALIASES

    if metric is None:
        return "voc07" if data == "voc" else "coco"
    key = str(metric).lower()
    if key == "coco":
        return "coco"
    if key == "proposals":
        if data != "coco":
            raise AblateError("metric 'proposals' reads COCO-layout ground truth: use --data coco "
                              "(a FashionScenes build has that layout too)")
        return key
    if key not in VOC_ALIASES:
        raise AblateError(f"unknown metric '{metric}'{did_you_mean(key, METRICS)}; "
                          f"choose one of {', '.join(METRICS)}")
    if data == "coco":
        raise AblateError(f"metric '{metric}' needs VOC-layout data (--data voc); COCO data is "
                          f"evaluated with --metric coco")
    return "voc07" if VOC_ALIASES[key] == "voc07" else "voc10"


def _is_fashion_scenes(root: Path) -> bool:
    for d in (root, root.parent if root.name == "VOCdevkit" else None):
        if d is not None and (d / ".complete").is_file():
            try:
                return "params" in json.loads((d / ".complete").read_text())
            except (json.JSONDecodeError, TypeError, OSError):
                return False
    return False


def _int_id(image_id: str) -> int | None:
    s = image_id.replace("_", "")
    return int(s) if s.isdigit() else None


def _group(idx: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
           n: int) -> list[dict]:
    """Flat detections with image index ``idx`` -> one dict per image (stable order)."""
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(n + 1))
    return [{"boxes": boxes[order[a:b]], "scores": scores[order[a:b]],
             "labels": labels[order[a:b]]} for a, b in zip(bounds[:-1], bounds[1:])]


def _unknown_ids(unknown: set, path: Path, split: str, n: int) -> AblateError:
    few = ", ".join(repr(u) for u in sorted(unknown)[:5])
    return AblateError(f"{path}: detections mention {len(unknown)} image ids that are not in "
                       f"split '{split}' ({n} images), e.g. {few}")


def _read_voc_folder(folder: Path, split: str, names: Sequence[str], ids: list[str]
                     ) -> tuple[list[dict], list[str]]:
    from ablate.eval.detections_io import read_voc_results

    prefix = f"comp4_det_{split}_"
    found = {p.name[len(prefix):-4] for p in folder.glob(f"{prefix}*.txt")}
    if not found:
        other = sorted(p.name for p in folder.glob("comp4_det_*.txt"))[:3]
        hint = f" (found {', '.join(other)}: another --split?)" if other else ""
        raise AblateError(f"{folder}: no results file {prefix}<class>.txt for any class{hint}")
    bad = sorted(found - set(names))
    if bad:
        raise AblateError(f"{folder}: results file {prefix}{bad[0]}.txt names class '{bad[0]}'"
                          f"{did_you_mean(bad[0], names)}, which is not one of the "
                          f"{len(names)} classes: {', '.join(names)}")
    present = [c for c in names if c in found]
    per_id = read_voc_results(folder, split, present, coord_offset=0.0)
    unknown = set(per_id) - set(ids)
    if unknown:
        raise _unknown_ids(unknown, folder, split, len(ids))
    lut = np.array([names.index(c) for c in present], np.int64)
    dets = [dict(per_id[i], labels=lut[per_id[i]["labels"]]) if i in per_id else dict(_EMPTY)
            for i in ids]
    return dets, [c for c in names if c not in found]


def _read_voc_json(path: Path, split: str, names: Sequence[str], ids: list[str]) -> list[dict]:
    from ablate.eval.detections_io import read_coco_results

    results = read_coco_results(path)
    index: dict[int, int] = {}
    for k, i in enumerate(ids):
        j = _int_id(i)
        if j is not None and index.setdefault(j, k) != k:
            raise AblateError(f"image ids '{ids[index[j]]}' and '{i}' of split '{split}' map to "
                              f"the same integer image_id {j}; use devkit results files")
    unknown = {r["image_id"] for r in results} - set(index)
    if unknown:
        raise _unknown_ids(unknown, path, split, len(ids))
    cats = np.array([r["category_id"] for r in results], np.int64)
    bad = cats[(cats < 1) | (cats > len(names))]
    if bad.size:
        raise AblateError(f"{path}: category_id {int(bad[0])} outside 1..{len(names)} "
                          f"(1-based index into: {', '.join(names)})")
    xywh = np.array([r["bbox"] for r in results], np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2] + 1.0, xywh[:, :2] + xywh[:, 2:]], axis=1)
    scores = np.array([r["score"] for r in results], np.float64)
    idx = np.array([index[r["image_id"]] for r in results], np.int64)
    return _group(idx, boxes, scores, cats - 1, len(ids))


def _coco_part(res: dict) -> dict:
    stats = {k: _pct(v) for k, v in res["stats"].items()}
    return {"map": stats["AP"], "stats": stats,
            "per_class": {k: _pct(v) for k, v in res["per_category"].items()}}


def _evaluate_voc(root: Path, split: str, det: Path, metric: str, year: str,
                  class_names: Sequence[str] | None, backend: str) -> dict:
    from ablate.data.datasets import fashion_scenes
    from ablate.data.datasets.voc import VOC_CLASSES, devkit_to_xyxy, voc_ground_truth

    if class_names is None:
        class_names = fashion_scenes.CLASSES if _is_fashion_scenes(root) else VOC_CLASSES
    names = list(class_names)
    ids, gts = voc_ground_truth(root, year, split, names)
    missing: list[str] = []
    if det.is_dir():
        dets, missing = _read_voc_folder(det, split, names, ids)
    else:
        dets = _read_voc_json(det, split, names, ids)
    out: dict[str, Any] = {}
    if metric == "coco":
        from ablate.eval.coco_map import build_coco_gt, coco_eval, detections_to_coco_results

        int_ids = [_int_id(i) for i in ids]
        coco_ids = int_ids if None not in int_ids and len(set(int_ids)) == len(ids) else None
        coco_ids = coco_ids or list(range(1, len(ids) + 1))
        cont = [{**g, "boxes": devkit_to_xyxy(g["boxes"])} for g in gts]
        gt = build_coco_gt(cont, coco_ids, category_names=names)
        cd = [{**d, "boxes": devkit_to_xyxy(d["boxes"])} for d in dets]
        out = _coco_part(coco_eval(gt, detections_to_coco_results(cd, coco_ids,
                                                                   range(1, len(names) + 1)),
                                   backend=backend))
    else:
        from ablate.eval.voc_map import voc_eval

        r = voc_eval(gts, dets, len(names), metric="voc07" if metric == "voc07" else "voc2010",
                     pixel_inclusive=True, strict=True)
        out = {"map": _pct(r["map"]),
               "per_class": {n: _pct(float(a)) for n, a in zip(names, r["ap"])}}
    return {**out, "num_images": len(ids), "num_detections": sum(len(d["scores"]) for d in dets),
            "missing_class_files": missing}


def _coco_files(root: Path, split: str, det: Path, folder_error: str
                ) -> tuple[Any, list[dict]]:
    """The split's annotation file (as a ``COCO``) and the results JSON ``det``, whose image
    ids it must know; a missing file or folder, or a folder for ``det``, is an error."""
    from ablate.data.datasets.coco import LAYOUT, load_coco_api
    from ablate.data.files import first_missing, missing_path_error
    from ablate.eval.detections_io import read_coco_results

    ann = root / "annotations" / f"instances_{split}.json"
    miss = first_missing([root, root / "annotations", ann])
    if miss is not None:
        raise missing_path_error(miss, "COCO", LAYOUT)
    if det.is_dir():
        raise AblateError(f"{det} is a folder; {folder_error}")
    gt = load_coco_api(ann)
    results = read_coco_results(det)
    unknown = {r["image_id"] for r in results} - set(gt.getImgIds())
    if unknown:
        raise _unknown_ids(unknown, det, split, len(gt.getImgIds()))
    return gt, results


def _evaluate_coco(root: Path, split: str, det: Path, backend: str) -> dict:
    from ablate.eval.coco_map import coco_eval

    gt, results = _coco_files(root, split, det, "--data coco expects a COCO results JSON file")
    bad = sorted({r["category_id"] for r in results} - set(gt.getCatIds()))
    if bad:
        ann = root / "annotations" / f"instances_{split}.json"
        raise AblateError(f"{det}: unknown category_id {bad[:5]}; {ann} has "
                          f"{sorted(gt.getCatIds())[:20]}")
    return {**_coco_part(coco_eval(gt, results, backend=backend)),
            "num_images": len(gt.getImgIds()),
            "num_detections": len(results)}


def _evaluate_proposals(root: Path, split: str, det: Path, nums: Sequence[int]) -> dict:
    from ablate.eval.proposal_recall import average_recall, coco_average_recall, coco_gt_boxes

    gt, results = _coco_files(root, split, det, "proposals come as a COCO results JSON file")
    ids = sorted(gt.getImgIds())
    index = {i: k for k, i in enumerate(ids)}
    boxes: list[list] = [[] for _ in ids]
    scores: list[list] = [[] for _ in ids]
    for r in results:
        x, y, w, h = r["bbox"]
        boxes[index[r["image_id"]]].append([x, y, x + w, y + h])
        scores[index[r["image_id"]]].append(r["score"])
    ar = average_recall(coco_gt_boxes(gt, ids), [np.array(b).reshape(-1, 4) for b in boxes],
                        [np.array(sc) for sc in scores], nums)
    coco_ar = coco_average_recall(gt, results, nums, img_ids=ids)
    return {"map": None, "per_class": {},
            "ar": {int(n): 100.0 * v for n, v in ar.items()},
            "coco_ar": {int(n): 100.0 * v for n, v in coco_ar.items()},
            "num_images": len(ids), "num_detections": len(results)}


def evaluate(data: str, root: str | os.PathLike, split: str, detections: str | os.PathLike,
             metric: str | None = None, year: str = "2007",
             class_names: Sequence[str] | None = None, coco_backend: str = "auto",
             proposal_nums: Sequence[int] = (100, 300, 1000)) -> dict:
    """Evaluate a detector's output files against a dataset split (see the module docstring).

    Args:
        data: ``"voc"`` or ``"coco"`` (dataset layout of ``root``).
        root: dataset root (``VOCdevkit``'s parent or itself; COCO root).
        split: image set (VOC ``test``/``trainval``...) or COCO split (``val2017``...).
        detections: devkit results folder or COCO results JSON (voc), results JSON (coco).
        metric: ``voc07`` (11-point), ``voc10`` (area; aliases of ``voc_map.METRICS`` work)
            or ``coco``; default ``voc07`` for voc, ``coco`` for coco.
        year: VOC year folder.
        class_names: VOC class list override (default: see module docstring).
        coco_backend: ``auto``, ``faster_coco_eval`` or ``pycocotools`` (the COCO metric).
        proposal_nums: the Ns of AR@N (``metric="proposals"``).
    Returns:
        JSON-able dict: ``data, split, metric, root, detections, map`` (percent), ``per_class``
        ({name: AP percent or None}), ``num_images``, ``num_detections``; voc adds
        ``missing_class_files``, the coco metric adds ``stats`` (12 COCO numbers, percent).
    """
    key = str(data).lower()
    if key not in DATA:
        raise AblateError(f"unknown data '{data}'{did_you_mean(key, DATA)}; choose voc or coco")
    metric = _metric(key, metric)
    det = Path(detections)
    if not det.exists():
        raise AblateError(f"detections not found: {det} does not exist")
    root = Path(root)
    from ablate.eval.coco_map import resolve_backend

    resolve_backend(coco_backend)  # a typo fails before any file is read
    if metric == "proposals":
        from ablate.eval.proposal_recall import proposal_nums as checked_nums

        res = _evaluate_proposals(root, split, det, checked_nums(list(proposal_nums)))
    elif key == "voc":
        res = _evaluate_voc(root, split, det, metric, str(year), class_names, coco_backend)
    else:
        res = _evaluate_coco(root, split, det, coco_backend)
    return {"data": key, "split": split, "metric": metric, "root": str(root),
            "detections": str(det), **res}


def format_table(result: dict) -> str:
    """Markdown table (class | AP) and an mAP line, from :func:`evaluate`'s result."""
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    if result["metric"] == "proposals":
        head = (f"proposal recall ({result['data']} {result['split']}, {result['num_images']} "
                f"images, {result['num_detections']} proposals)")
        lines = [head, "", "| N | AR@N (MMDetection) | AR@N (COCOeval, useCats=0) |",
                 "|---:|---:|---:|"]
        lines += [f"| {n} | {f(result['ar'][n])} | {f(result['coco_ar'][n])} |"
                  for n in result["ar"]]
        return "\n".join(lines)

    width = max([5, *map(len, result["per_class"])])
    lines = [f"| {'class':<{width}} | AP     |", f"|{'-' * (width + 2)}|-------:|"]
    lines += [f"| {k.replace('|', '/'):<{width}} | {f(v):>6} |"
              for k, v in result["per_class"].items()]
    lines.append("")
    if "stats" in result:
        lines.append("  ".join(f"{k} {f(v)}" for k, v in result["stats"].items()))
    lines.append(f"mAP ({result['metric']}, {result['data']} {result['split']}, "
                 f"{result['num_images']} images, {result['num_detections']} detections): "
                 f"{f(result['map'])}")
    if result.get("missing_class_files"):
        lines.append(f"no results file (AP 0) for: {', '.join(result['missing_class_files'])}")
    return "\n".join(lines)
