"""COCO detection (Lin et al., ECCV 2014) through pycocotools.

Layout: ``<root>/annotations/instances_<split>.json`` and images ``<root>/<split>/<file_name>``.
Category ids (1..90 with gaps for COCO) map to contiguous 0-based labels in sorted-id order;
``dataset.cat_ids[label]`` is the inverse map (needed to write detections for ``COCOeval``).
COCO's ``[x, y, w, h]`` boxes are already 0-based continuous, so xyxy is ``[x, y, x+w, y+h]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate.data.files import first_missing, load_rgb, missing_path_error
from ablate.data.targets import make_target
from ablate.errors import AblateError

LAYOUT = """\
<root>/
  annotations/
    instances_<split>.json    (e.g. instances_train2017.json, instances_val2017.json)
  <split>/
    <file_name>               (e.g. train2017/000000000009.jpg)"""


def load_coco_api(ann_file: str | os.PathLike):
    """Load an annotation file with pycocotools, silencing its prints.

    Returns:
        a ``pycocotools.coco.COCO`` object.
    """
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise missing_path_error(ann_file, "COCO", LAYOUT)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, KeyError,
            TypeError) as e:
        raise AblateError(f"{ann_file}: not a COCO annotation file ({e!r})") from None


class COCODetection(torch.utils.data.Dataset):
    """COCO-format detection images with xyxy 0-based continuous boxes.

    Args:
        root: the dataset folder (see ``LAYOUT``).
        split: image folder and annotation suffix, e.g. ``"train2017"`` or ``"val2017"``.
        ann_file: annotation json; default ``<root>/annotations/instances_<split>.json``.
        remove_crowd: drop ``iscrowd`` regions from the targets (training). When False they are
            kept, flagged in ``target["iscrowd"]`` and also marked ``difficult`` (ignored), the
            way VOC's difficult objects are.
        min_size: boxes narrower or shorter than this (in pixels, after clipping to the image)
            are dropped, as are boxes of zero width or height.
        skip_empty: leave out images with no box left after the filtering above (for training;
            keep False for evaluation so every image is scored).
    Targets also carry ``iscrowd`` (bool ``[N]``); ``difficult`` comes from an optional
    per-annotation ``difficult`` field (FashionScenes writes one), else False.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train2017",
                 ann_file: str | os.PathLike | None = None, remove_crowd: bool = True,
                 min_size: float = 1, skip_empty: bool = False):
        self.root = Path(root)
        self.split = split
        ann_file = Path(ann_file) if ann_file is not None else (
            self.root / "annotations" / f"instances_{split}.json")
        missing = first_missing([self.root, ann_file, self.root / split])
        if missing is not None:
            raise missing_path_error(missing, "COCO", LAYOUT)
        self.ann_file = ann_file
        self.image_dir = self.root / split
        self.remove_crowd = remove_crowd
        self.min_size = float(min_size)
        self.coco = load_coco_api(ann_file)

        for key in ("images", "annotations", "categories"):
            if not isinstance(self.coco.dataset.get(key), list):
                raise AblateError(f"{ann_file}: no '{key}' list (not COCO instances ground "
                                  "truth)")
        cats = self.coco.dataset["categories"]
        if not cats:
            raise AblateError(f"{ann_file}: no categories")
        self.cat_ids: list[int] = sorted(int(c["id"]) for c in cats)
        self.cat_id_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        names = {int(c["id"]): str(c["name"]) for c in cats}
        self.class_names: tuple[str, ...] = tuple(names[c] for c in self.cat_ids)

        # Check category ids up front so a bad file fails before training, not mid-epoch.
        unknown = {int(a["category_id"]) for a in self.coco.anns.values()} - set(self.cat_ids)
        if unknown:
            raise AblateError(f"{ann_file}: annotations use unknown category_id(s) "
                              f"{sorted(unknown)[:10]}")
        ids = sorted(int(i) for i in self.coco.imgs)
        if skip_empty:
            ids = [i for i in ids if len(self._boxes(i)[0])]
        self.ids: list[int] = ids

    def __len__(self) -> int:
        return len(self.ids)

    def _boxes(self, image_id: int) -> tuple[np.ndarray, ...]:
        """Filtered ``(xyxy float32, labels, difficult, iscrowd)`` of one image."""
        info = self.coco.imgs[image_id]
        try:
            width, height = float(info["width"]), float(info["height"])
        except (KeyError, TypeError, ValueError):
            raise AblateError(f"{self.ann_file}: image {image_id} has no numeric width and "
                              "height") from None
        boxes, labels, difficult, crowd = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            is_crowd = bool(ann.get("iscrowd", 0))
            if is_crowd and self.remove_crowd:
                continue
            cat = int(ann["category_id"])
            if cat not in self.cat_id_to_label:
                raise AblateError(f"{self.ann_file}: annotation {ann.get('id')} has unknown "
                                  f"category_id {cat}")
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError):
                raise AblateError(f"{self.ann_file}: annotation {ann.get('id')} has no bbox of "
                                  f"four numbers (got {ann.get('bbox')!r})") from None
            # Clip to the image: a few COCO boxes overhang the border by a fraction of a pixel.
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0 or bw < self.min_size or bh < self.min_size:
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(self.cat_id_to_label[cat])
            difficult.append(bool(ann.get("difficult", 0)) or is_crowd)
            crowd.append(is_crowd)
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64), np.asarray(difficult, dtype=bool),
                np.asarray(crowd, dtype=bool))

    def image_path(self, i: int) -> Path:
        """Path of image ``i``."""
        return self.image_dir / self.coco.imgs[self.ids[i]]["file_name"]

    def get_image_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` from the annotation file (no decoding)."""
        info = self.coco.imgs[self.ids[i]]
        return int(info["height"]), int(info["width"])

    def get_target(self, i: int) -> dict[str, Any]:
        """Image ``i``'s target without decoding the image (``orig_size`` from the json)."""
        image_id = self.ids[i]
        boxes, labels, difficult, crowd = self._boxes(image_id)
        return make_target(boxes, labels, difficult, image_id, self.get_image_size(i),
                           iscrowd=torch.from_numpy(crowd))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        path = self.image_path(i)
        if not path.is_file():
            raise missing_path_error(path, "COCO", LAYOUT)
        image = load_rgb(path)
        target = self.get_target(i)
        target["orig_size"] = (int(image.shape[1]), int(image.shape[2]))
        return image, target

    def __repr__(self) -> str:
        return f"COCODetection({self.root}, {self.split}, {len(self)} images)"


def official_ground_truth(loader: Any) -> tuple[Any, list[int]] | None:
    """The annotation file's ``COCO`` object and the label → category id list of ``loader``'s
    dataset, when it is a ``COCODetection`` (under any ``Subset``); else None. Scoring against
    it gives the official COCO figures: boxes as annotated (no clipping, tiny boxes kept),
    annotation areas, crowd flags."""
    dataset = getattr(getattr(loader, "dataset", None), "source", None)
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    if isinstance(dataset, COCODetection):
        return dataset.coco, list(dataset.cat_ids)
    return None
