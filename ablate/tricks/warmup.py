"""Linear learning-rate warmup (Goyal et al., 2017; Bag of Tricks Sec. 3.1).

The LR rises linearly from base/N to base over the first N = epochs × iters_per_epoch
iterations; the schedule proper (step or cosine) starts after it.
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

    def __init__(self, epochs: float = 5) -> None:
        if epochs <= 0:
            raise AblateError(f"warmup.epochs must be positive, got {epochs}")
        self.epochs = float(epochs)

    def schedule(self, shape: LRShape, ctx: BuildContext, base_lr: float) -> LRShape:
        iters = max(1, int(round(self.epochs * ctx.iters_per_epoch)))
        if iters >= ctx.total_iters:
            raise AblateError(f"warmup of {self.epochs:g} epochs ({iters} iterations) is not "
                              f"shorter than training ({ctx.total_iters} iterations)")
        return WarmupShape(shape, iters)
