"""Linear learning-rate warmup (Goyal et al., 2017; Bag of Tricks Sec. 3.1).

The LR rises linearly from base/N to base over the first N = epochs × iters_per_epoch
iterations; the schedule proper (step or cosine) starts after it. ``start_factor`` f > 0 starts
the ramp at f × base instead (base × (f + (1 − f)(it + 1)/N); GluonCV's COCO Faster R-CNN
uses 1/3, as detectron2's default; their form f + (1 − f)·it/N differs from this by at most
(1 − f)/N of the base LR, at the first step). MegDet's warmup starts at the batch-16 rate:
f = 16 / batch (f = 1 at batch 16, a constant LR).
"""

from __future__ import annotations

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.solver.lr import LRShape, WarmupShape
from ablate.tricks.base import BuildContext, Trick


@TRICKS.register("warmup")
class Warmup(Trick):
    name = "warmup"
    tasks = ("classification", "yolo", "rcnn")
    order = 100  # wraps whatever shape the other tricks produced

    def __init__(self, epochs: float = 5, start_factor: float = 0.0) -> None:
        if epochs <= 0:
            raise AblateError(f"warmup.epochs must be positive, got {epochs}")
        if not 0 <= start_factor <= 1:
            raise AblateError(f"warmup.start_factor must be in [0, 1], got {start_factor}")
        self.epochs, self.start_factor = float(epochs), float(start_factor)

    def schedule(self, shape: LRShape, ctx: BuildContext, base_lr: float) -> LRShape:
        iters = max(1, int(round(self.epochs * ctx.iters_per_epoch)))
        if iters >= ctx.total_iters:
            raise AblateError(f"warmup of {self.epochs:g} epochs ({iters} iterations) is not "
                              f"shorter than training ({ctx.total_iters} iterations)")
        return WarmupShape(shape, iters, start_factor=self.start_factor)
