"""Linear scaling rule (Goyal et al., 2017; Bag of Tricks Sec. 3.1; MegDet Sec. 3.1).

``base_lr = ref_lr × total_batch / ref_batch`` where ``ref_lr`` is ``optim.lr`` and the total
batch counts every process (and accumulation step): 0.1 per 256 images for ImageNet.
"""

from __future__ import annotations

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import BuildContext, Trick


@TRICKS.register("linear_scaling")
class LinearScaling(Trick):
    name = "linear_scaling"
    tasks = ("classification", "yolo", "rcnn")

    def __init__(self, ref_batch: int = 256) -> None:
        if ref_batch <= 0:
            raise AblateError(f"linear_scaling.ref_batch must be positive, got {ref_batch}")
        self.ref_batch = int(ref_batch)

    def base_lr(self, lr: float, ctx: BuildContext) -> float:
        return lr * ctx.total_batch / self.ref_batch
