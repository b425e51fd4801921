"""Helpers shared by the detection datasets (VOC, COCO, FashionScenes).

Every detection dataset returns ``(image, target)``: ``image`` is a uint8 tensor ``[3, H, W]``
(RGB) and ``target`` a dict with

* ``boxes``: float32 ``[N, 4]`` xyxy in 0-based *continuous* pixel coordinates (a box covering
  the whole image is ``[0, 0, W, H]``),
* ``labels``: int64 ``[N]`` 0-based class indices,
* ``difficult``: bool ``[N]`` (objects the evaluation ignores),
* ``image_id``: ``str`` (VOC) or ``int`` (COCO),
* ``orig_size``: ``(H, W)``.

Boxes stay plain tensors; the transforms wrap them in ``tv_tensors`` where needed.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from ablate.errors import AblateError


def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file as RGB.

    Args:
        path: a JPEG or PNG file.
    Returns:
        uint8 tensor ``[3, H, W]``.
    """
    path = Path(path)
    if not path.is_file():
        raise AblateError(f"image not found: {path}")
    try:
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec (not installed here);
        # hide that one warning, which would otherwise fire for every image.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*image decoding and encoding",
                                    category=DeprecationWarning)
            return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as e:  # torchvision raises RuntimeError for corrupt files
        raise AblateError(f"cannot decode image {path}: {e}") from e


def make_target(boxes: Any, labels: Any, difficult: Any, image_id: str | int,
                orig_size: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """Build a target dict in the common format (see the module docstring).

    Args:
        boxes: ``[N, 4]`` xyxy 0-based continuous boxes (array-like).
        labels: ``[N]`` 0-based class indices.
        difficult: ``[N]`` booleans.
        image_id: the dataset's id for the image.
        orig_size: ``(H, W)`` of the original image.
        extra: further per-image or per-box entries (e.g. ``iscrowd``), stored as given.
    Returns:
        the target dict, with fresh tensors (safe to modify in place).
    """
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    target = {
        "boxes": boxes.clone(),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)).clone(),
        "difficult": torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1)).clone(),
        "image_id": image_id,
        "orig_size": (int(orig_size[0]), int(orig_size[1])),
    }
    target.update(extra)
    return target


def missing_path_error(missing: Path, what: str, layout: str) -> AblateError:
    """An ``AblateError`` naming the first missing path and spelling out the expected layout.

    Args:
        missing: the first path that was expected but not found.
        what: the dataset's name, e.g. ``"Pascal VOC"``.
        layout: a small tree of the expected layout (multi-line string).
    """
    return AblateError(f"{what} not found: {missing} does not exist. Expected layout:\n"
                       f"{layout.rstrip()}")


def first_missing(paths: Iterable[Path]) -> Path | None:
    """Return the first of ``paths`` that does not exist, or None."""
    for p in paths:
        if not p.exists():
            return p
    return None


def check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of class names (non-empty, unique) and return it as a tuple."""
    names = tuple(str(c) for c in class_names)
    if not names:
        raise AblateError("class_names is empty")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise AblateError(f"class_names has duplicates: {dup}")
    return names


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed), e.g. so that concurrent
    ranks build a generated dataset only once."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
