"""Data augmentation for detection (Bag of Freebies Sec. 3.2; SSD's pipeline for YOLOv3).

Colour distortion, random expand, min-IoU random crop, random-interpolation resize and flip
(see ablate/data/detection_transforms.py). The "- data augmentation" row removes this trick,
leaving resize + normalise only.
"""

from __future__ import annotations

from typing import Any

from ablate.registry import TRICKS
from ablate.tricks.base import Trick


@TRICKS.register("data_augmentation")
class DataAugmentation(Trick):
    name = "data_augmentation"
    tasks = ("yolo",)

    def data_options(self) -> dict[str, Any]:
        return {"augment": True}
