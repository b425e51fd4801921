"""Data augmentation for detection (Bag of Freebies Sec. 3.3; SSD's pipeline for YOLOv3).

YOLOv3: colour distortion, random expand, min-IoU random crop, random-interpolation resize and
flip (``YoloAugment``, ablate/data/pipelines/transforms.py) in place of the plain resize.
Faster R-CNN (Sec. 4.1, Table 4): horizontal flip with p 0.5 only — no crop, no colour jitter
(``RcnnResize(flip=True)``, ablate/data/pipelines/rcnn.py). The "- data augmentation" row
removes this trick, leaving resize + normalise only.

``color`` (YOLO): how the colour distortion applies its draws — ``gluoncv`` (the default: as
GluonCV released it, the code behind Table 3) or ``clamped`` (contrast around the mean grey,
hue in degrees, clamping after each step; what this trick did before). See
``ablate.data.pipelines.transforms.color_distort``.
"""

from __future__ import annotations

from typing import Any

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import DataContext, Trick


@TRICKS.register("data_augmentation")
class DataAugmentation(Trick):
    name = "data_augmentation"
    tasks = ("yolo", "rcnn")

    def __init__(self, color: str = "gluoncv") -> None:
        from ablate.data.pipelines.transforms import COLOR_MODES

        if color not in COLOR_MODES:
            raise AblateError(f"tricks.data_augmentation.color={color!r}: must be one of "
                              f"{', '.join(COLOR_MODES)}")
        self.color = color

    def sample_transform(self, transform: Any, ctx: DataContext) -> Any:
        from ablate.data.pipelines.rcnn import RcnnResize
        from ablate.data.pipelines.transforms import PlainResize, YoloAugment

        if type(transform) is RcnnResize:  # the rcnn pipeline's resize: add the flip
            return transform.flipping()
        if type(transform) is PlainResize:  # the yolo pipeline's square resize
            return YoloAugment(color_mode=self.color)
        raise AblateError(f"data_augmentation has no augmentation for the training transform "
                          f"{type(transform).__name__}")
