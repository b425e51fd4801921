"""Synchronized BatchNorm (Peng et al., MegDet, CVPR 2018; Bag of Freebies Sec. 3.4).

BN statistics over ``group_size`` images (default: the whole global batch) instead of each
device's share. On several CUDA processes this is torch SyncBatchNorm; on one device, where the
baseline emulates per-GPU BN with ghost batches (``train.bn_group_size``), it is BN over the
whole batch — so "+ sync BN" means the same on one device as on eight.
"""

from __future__ import annotations

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import BuildContext, Trick


@TRICKS.register("sync_bn")
class SyncBN(Trick):
    name = "sync_bn"
    tasks = ("classification", "yolo", "rcnn")

    def __init__(self, group_size: int | None = None) -> None:
        if group_size is not None and group_size < 1:
            raise AblateError(f"sync_bn.group_size must be positive, got {group_size}")
        self.group_size = group_size

    def bn_group_size(self, size: int | None, ctx: BuildContext) -> int | None:
        return self.group_size or ctx.total_batch
