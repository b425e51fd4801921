"""Detection results files: VOC devkit per-class text files and COCO results JSON.

VOC: the devkit (``VOCevaldet.m``; evaluation server "comp4", any training data) reads one file
per class, ``comp4_det_<split>_<class>.txt``, with one line per detection
``image_id score xmin ymin xmax ymax`` in its 1-based pixel coordinates.
COCO: the results format of cocodataset.org ("Results Format"): a JSON list of
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ablate.errors import AblateError

__all__ = ["voc_results_path", "write_voc_results", "read_voc_results",
           "write_coco_results", "read_coco_results", "validate_coco_results"]

Offset = float | Sequence[float]


def _np(x: Any, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _offset(coord_offset: Offset) -> np.ndarray:
    off = np.broadcast_to(np.asarray(coord_offset, np.float64), (4,))
    return off.copy()


def voc_results_path(folder: str | os.PathLike, split: str, class_name: str) -> Path:
    """``<folder>/comp4_det_<split>_<class>.txt``."""
    return Path(folder) / f"comp4_det_{split}_{class_name}.txt"


def write_voc_results(folder: str | os.PathLike, split: str, class_names: Sequence[str],
                      image_ids: Sequence[str], dets: Sequence[Mapping[str, Any]],
                      coord_offset: Offset = 1.0, score_digits: int = 6,
                      coord_digits: int = 1) -> list[Path]:
    """Write one devkit results file per class (empty files for classes without detections).

    Args:
        folder: output directory (created).
        split: image set name, e.g. ``"test"``.
        class_names: name per 0-based label.
        image_ids: devkit image id (e.g. ``"000001"``) per entry of ``dets``.
        dets: one dict per image: ``boxes`` [D,4] xyxy, ``scores`` [D], ``labels`` [D].
        coord_offset: added to (xmin, ymin, xmax, ymax) when writing: 1.0 turns 0-based pixel
            indices into the devkit's 1-based ones (py-faster-rcnn); (1, 1, 0, 0) turns
            continuous coordinates into pixel indices (Detectron2).
        score_digits, coord_digits: decimals printed (py-faster-rcnn prints 3 and 1; more score
            digits avoid artificial ties).
    Returns:
        The written paths, in class order.
    """
    if len(image_ids) != len(dets):
        raise AblateError(f"{len(dets)} detection entries but {len(image_ids)} image ids")
    off = _offset(coord_offset)
    per_class: list[list[str]] = [[] for _ in class_names]
    line = f"{{}} {{:.{score_digits}f}}" + f" {{:.{coord_digits}f}}" * 4
    for img, d in zip(image_ids, dets):
        img = str(img)
        if not img or any(ch.isspace() for ch in img):
            raise AblateError(f"VOC image id {img!r} is empty or contains whitespace")
        boxes = (_np(d["boxes"], np.float64).reshape(-1, 4) + off).tolist()
        labels = _np(d["labels"]).reshape(-1).astype(np.int64).tolist()
        scores = _np(d["scores"], np.float64).reshape(-1).tolist()
        for b, lab, s in zip(boxes, labels, scores):
            if not 0 <= lab < len(class_names):
                raise AblateError(f"image {img}: label {lab} outside 0..{len(class_names) - 1}")
            per_class[lab].append(line.format(img, s, *b))
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, lines in zip(class_names, per_class):
        path = voc_results_path(folder, split, name)
        path.write_text("".join(x + "\n" for x in lines))
        paths.append(path)
    return paths


def read_voc_results(folder: str | os.PathLike, split: str, class_names: Sequence[str],
                     image_ids: Sequence[str] | None = None,
                     coord_offset: Offset = 1.0) -> dict[str, dict[str, np.ndarray]]:
    """Read devkit results files back into per-image detections.

    Args:
        folder, split, class_names: as for :func:`write_voc_results`; every class file must exist.
        image_ids: if given, every id gets an entry (empty when it has no detection) and ids
            outside it are an error; otherwise only images with detections appear.
        coord_offset: subtracted from the coordinates (inverse of the writer's).
    Returns:
        ``{image_id: {"boxes": [N,4] float64, "scores": [N] float64, "labels": [N] int64}}``,
        detections in class order, then file order.
    """
    off = _offset(coord_offset)
    known = None if image_ids is None else set(map(str, image_ids))
    rows: dict[str, list] = {str(i): [] for i in image_ids} if image_ids is not None else {}
    for label, name in enumerate(class_names):
        path = voc_results_path(folder, split, name)
        if not path.is_file():
            raise AblateError(f"VOC results file missing: {path}")
        with open(path) as f:
            for lineno, text in enumerate(f, 1):
                parts = text.split()
                if not parts:
                    continue
                try:
                    if len(parts) != 6:
                        raise ValueError(f"{len(parts)} fields")
                    vals = [float(p) for p in parts[1:]]
                    if not all(math.isfinite(v) for v in vals):
                        raise ValueError("non-finite number")
                except ValueError as exc:
                    raise AblateError(f"{path}:{lineno}: expected 'image_id score xmin ymin xmax "
                                      f"ymax', got {text.strip()!r} ({exc})") from None
                img = parts[0]
                if known is not None and img not in known:
                    raise AblateError(f"{path}:{lineno}: unknown image id {img!r}")
                rows.setdefault(img, []).append((label, vals))
    out = {}
    for img, r in rows.items():
        vals = np.array([v for _, v in r], np.float64).reshape(-1, 5)
        out[img] = {"boxes": vals[:, 1:] - off, "scores": vals[:, 0],
                    "labels": np.array([lab for lab, _ in r], np.int64)}
    return out


def _is_num(x: Any) -> bool:
    # Exact-type fast paths first: ABC isinstance checks dominate on 500k results otherwise.
    t = type(x)
    if t is float:
        return math.isfinite(x)
    if t is int:
        return True
    return isinstance(x, numbers.Real) and t is not bool and math.isfinite(x)


def _is_int(x: Any) -> bool:
    t = type(x)
    return t is int or (t is not bool and isinstance(x, numbers.Integral))


def _plain_and_valid(results: list, need_bbox: bool) -> bool:
    """Fast check for the common case (plain dict/int/float, as json.load gives): a few passes
    over columns instead of ~10 calls per entry. False means "use the slow, precise check"."""
    if not all(type(r) is dict for r in results):
        return False
    for key, ok in (("image_id", {int}), ("category_id", {int}), ("score", {int, float})):
        col = [r.get(key) for r in results]
        if not set(map(type, col)) <= ok or (key == "score" and not np.isfinite(col).all()):
            return False
    if need_bbox or any("bbox" in r for r in results):
        try:
            boxes = [r["bbox"] for r in results]
        except KeyError:
            return False
        if not set(map(type, boxes)) <= {list} or not set(map(len, boxes)) <= {4}:
            return False
        flat = list(itertools.chain.from_iterable(boxes))
        if not set(map(type, flat)) <= {int, float} or not all(map(math.isfinite, flat)):
            return False
    return True


def validate_coco_results(results: Any, source: str = "results", need_bbox: bool = True) -> None:
    """Raise AblateError unless ``results`` is a list of well-formed COCO result dicts.

    Args:
        results: the parsed results.
        source: file name (or description) used in the error message.
        need_bbox: require ``bbox`` ([x, y, w, h], 4 finite numbers) in every entry.
    """
    if not isinstance(results, list):
        raise AblateError(f"{source}: COCO results must be a JSON list of objects, "
                          f"got {type(results).__name__}")
    if _plain_and_valid(results, need_bbox):
        return
    for i, r in enumerate(results):
        problem = None
        if not isinstance(r, Mapping):
            problem = f"expected an object, got {type(r).__name__}"
        elif not _is_int(r.get("image_id")):
            problem = f"'image_id' must be an integer, got {r.get('image_id')!r}"
        elif not _is_int(r.get("category_id")):
            problem = f"'category_id' must be an integer, got {r.get('category_id')!r}"
        elif not _is_num(r.get("score")):
            problem = f"'score' must be a finite number, got {r.get('score')!r}"
        elif need_bbox or "bbox" in r:
            b = r.get("bbox")
            if not (isinstance(b, (list, tuple)) and len(b) == 4 and all(map(_is_num, b))):
                problem = f"'bbox' must be [x, y, w, h] numbers, got {b!r}"
        if problem:
            raise AblateError(f"{source}: entry {i}: {problem}")


def _json_default(x: Any) -> Any:
    # numpy scalars/arrays and tensors slip into results built by hand.
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def write_coco_results(path: str | os.PathLike, results: Sequence[Mapping[str, Any]]) -> Path:
    """Write COCO results JSON (parent folders created).

    Args:
        path: output file.
        results: list of ``{image_id, category_id, bbox, score}`` (numpy types allowed).
    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(list(results), default=_json_default)
    validate_coco_results(json.loads(text), str(path), need_bbox=False)
    path.write_text(text)
    return path


def read_coco_results(path: str | os.PathLike, need_bbox: bool = True) -> list[dict]:
    """Read and validate a COCO results JSON.

    Args:
        path: results file.
        need_bbox: require a ``bbox`` in every entry (False for segmentation-only results).
    Returns:
        The list of result dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise AblateError(f"COCO results file not found: {path}")
    try:
        with open(path) as f:
            results = json.load(f)
    except json.JSONDecodeError as exc:
        raise AblateError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from None
    validate_coco_results(results, str(path), need_bbox=need_bbox)
    return results
