"""ImageNet (ILSVRC-2012) as an ImageFolder tree: the layout, its classes and files.

Layout (``LAYOUT``): ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG``. The classes
are the sorted names of the train sub-folders (label = position); val must have the same
folders. Files ending in .jpeg, .jpg or .png (any case) are images; hidden entries are skipped.
Only names are read here; decoding and augmentation are the classification pipeline's
(``ablate.data.pipelines.classification``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ablate.data.files import first_missing, missing_path_error
from ablate.errors import AblateError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
LAYOUT = """\
<root>/                    (data.root; default ${paths.data}/imagenet)
  train/<wnid>/*.JPEG      one folder per class, e.g. train/n01440764/n01440764_10026.JPEG
  val/<wnid>/*.JPEG        the same class folders (ILSVRC-2012's 50,000 flat val images sorted
                           into them, e.g. by the devkit's ground truth)"""


def list_classes(folder: str | os.PathLike) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder``."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def list_images(folder: str | os.PathLike) -> list[str]:
    """Sorted names of the image files (``IMAGE_EXTENSIONS``, any case) in ``folder``."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.name.lower().endswith(IMAGE_EXTENSIONS)
                      and not e.name.startswith(".") and e.is_file())


def _split_classes(root: Path, split_dir: str) -> list[str]:
    folder = root / split_dir
    missing = first_missing([root, folder])
    if missing is not None:
        raise missing_path_error(missing, "ImageNet", LAYOUT)
    classes = list_classes(folder) if folder.is_dir() else []
    if not classes:
        raise AblateError(f"ImageNet: {folder} has no class folders. Expected layout:\n{LAYOUT}")
    return classes


def few(names: Sequence[str], k: int = 5) -> str:
    """``a, b, c`` (at most ``k`` names, then the count), or ``none``."""
    if not names:
        return "none"
    more = f" … ({len(names)} in all)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def find_classes(root: str | os.PathLike, train_dir: str = "train", val_dir: str = "val",
                 num_classes: int | None = None) -> list[str]:
    """The class names (sorted train folders), checked against val and ``num_classes``.

    Only folder names are read (no image is listed or decoded).
    Raises:
        AblateError: a folder is missing or has no class folders, val's classes differ from
            train's, or their number is not ``num_classes``.
    """
    root = Path(root)
    classes = _split_classes(root, train_dir)
    val = _split_classes(root, val_dir)
    if val != classes:
        known, seen = set(classes), set(val)
        raise AblateError(
            f"ImageNet: {root / val_dir} must have the same class folders as "
            f"{root / train_dir} ({len(val)} vs {len(classes)}); missing in {val_dir}: "
            f"{few(sorted(known - seen))}; not in {train_dir}: {few(sorted(seen - known))}")
    if num_classes is not None and len(classes) != int(num_classes):
        raise AblateError(f"ImageNet in {root}: {len(classes)} class folders in {train_dir}/ but "
                          f"data.num_classes={num_classes}")
    return classes


def interleaved_first(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Indices of the first ``n`` items in class-interleaved order (item 0 of every class, then
    item 1, …), ascending; ``labels`` must be sorted. ``None`` keeps all."""
    if n is not None and int(n) < 1:
        raise AblateError(f"train_subset/test_subset must be >= 1 or null, got {n}")
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    starts = np.searchsorted(labels, labels, side="left")  # first index of each item's class
    order = np.lexsort((labels, np.arange(len(labels)) - starts))  # by position, then class
    return np.sort(order[:int(n)])
