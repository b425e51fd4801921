"""Data augmentation for detection (Bag of Freebies Sec. 3.3; SSD's pipeline for YOLOv3).

YOLOv3: colour distortion, random expand, min-IoU random crop, random-interpolation resize and
flip (see ablate/data/detection_transforms.py). Faster R-CNN (Sec. 4.1, Table 4): horizontal flip
with p 0.5 only — no crop, no colour jitter (ablate/data/detection_rcnn.py). The
"- data augmentation" row removes this trick, leaving resize + normalise only.
"""

from __future__ import annotations

from typing import Any

from ablate.registry import TRICKS
from ablate.tricks.base import Trick


@TRICKS.register("data_augmentation")
class DataAugmentation(Trick):
    name = "data_augmentation"
    tasks = ("yolo", "rcnn")

    def data_options(self) -> dict[str, Any]:
        return {"augment": True}
