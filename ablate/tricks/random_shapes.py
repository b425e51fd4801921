"""Random training shapes (YOLOv2/v3 multi-scale training; Bag of Freebies Table 3).

Every ``every`` iterations one size is drawn from ``sizes`` and the whole batch is resized to
it (boxes rescaled); evaluation stays at the fixed size. ``sizes: null`` = 320…608 step 32,
scaled proportionally to the training size of proxies.
"""

from __future__ import annotations

from typing import Any

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import Trick


@TRICKS.register("random_shapes")
class RandomShapes(Trick):
    name = "random_shapes"
    tasks = ("yolo",)

    def __init__(self, sizes: list[int] | None = None, every: int = 10) -> None:
        if every < 1:
            raise AblateError(f"random_shapes.every must be >= 1, got {every}")
        if sizes is not None and (not sizes or any(int(s) <= 0 for s in sizes)):
            raise AblateError(f"random_shapes.sizes must be positive sizes, got {sizes}")
        self.sizes = None if sizes is None else [int(s) for s in sizes]
        self.every = int(every)

    def data_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"every": self.every}
        if self.sizes is not None:
            opts["sizes"] = self.sizes
        return {"random_shapes": opts}
