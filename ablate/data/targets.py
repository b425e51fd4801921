"""Detection targets: the dict every detection dataset returns with each image, and the
helpers that keep its per-box columns together.

``target`` holds

* ``boxes``: float32 ``[N, 4]`` xyxy in 0-based *continuous* pixel coordinates (a box covering
  the whole image is ``[0, 0, W, H]``),
* ``labels``: int64 ``[N]`` 0-based class indices,
* ``difficult``: bool ``[N]`` (objects the evaluation ignores),
* ``image_id``: ``str`` (VOC) or ``int`` (COCO),
* ``orig_size``: ``(H, W)``,

and, in training, ``weights``: float32 ``[N]`` (a box's loss weight; mixup sets it).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ablate.errors import AblateError


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


def per_box_keys(target: dict[str, Any]) -> list[str]:
    """Keys of ``target`` (besides ``boxes``) holding a tensor with one row per box."""
    n = len(target["boxes"])
    return [k for k, v in target.items() if k != "boxes" and isinstance(v, torch.Tensor)
            and v.ndim >= 1 and v.shape[0] == n]


def with_weights(target: dict[str, Any]) -> dict[str, Any]:
    """``target`` with a float ``weights`` column (1.0 per box) when it has none."""
    if "weights" in target:
        return target
    return {**target, "weights": torch.ones(len(target["boxes"]), dtype=torch.float32)}


def check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of class names (non-empty, unique) and return it as a tuple."""
    names = tuple(str(c) for c in class_names)
    if not names:
        raise AblateError("class_names is empty")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise AblateError(f"class_names has duplicates: {dup}")
    return names
