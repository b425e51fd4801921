"""Cosine learning-rate decay (Loshchilov & Hutter, 2017; Bag of Tricks Sec. 5.1;
Bag of Freebies Sec. 3.3), updated every iteration; replaces the step schedule."""

from __future__ import annotations

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.solver.lr import CosineShape, LRShape
from ablate.tricks.base import BuildContext, Trick


@TRICKS.register("cosine")
class Cosine(Trick):
    name = "cosine"
    tasks = ("classification", "yolo", "rcnn")
    order = -100  # replaces the base shape before anything wraps it

    def __init__(self, target_lr: float = 0.0) -> None:
        if target_lr < 0:
            raise AblateError(f"cosine.target_lr must be >= 0, got {target_lr}")
        self.target_lr = float(target_lr)

    def schedule(self, shape: LRShape, ctx: BuildContext, base_lr: float) -> LRShape:
        return CosineShape(total=ctx.total_iters, target_ratio=self.target_lr / base_lr)
