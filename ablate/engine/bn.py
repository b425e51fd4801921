"""BatchNorm statistics groups ("BN size", MegDet Sec. 3.3; sync BN in Bag of Freebies Sec. 3.4).

``bn_group_size`` = images per BN statistics group:

- smaller than a process's batch → ghost batches: each group of ``g`` images is normalised with
  its own statistics, which is exactly what per-GPU BN does on ``batch / g`` GPUs — so a
  single device reproduces the "without sync BN" baseline of an 8-GPU paper run;
- equal to it → ordinary BatchNorm;
- larger → statistics synchronised across ``g / per_process_batch`` processes
  (torch SyncBatchNorm with process groups; CUDA only — torch has no CPU SyncBatchNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per group of ``group_size`` images.

    Running statistics are updated with the mean over groups of each group's batch statistics
    (unbiased variance), as averaging per-GPU running buffers would.
    """

    def __init__(self, num_features: int, group_size: int, **kw) -> None:
        super().__init__(num_features, **kw)
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not self.training or b <= self.group_size:
            return super().forward(x)
        if b % self.group_size:
            raise RuntimeError(f"batch of {b} is not a multiple of bn_group_size "
                               f"{self.group_size}")
        # one native batch_norm per group (3-4x faster on CPU than the statistics written out
        # as tensor ops); with momentum 1 each call leaves its group's mean and unbiased
        # variance in the fresh buffers it is given, so the statistics come for free
        track = self.track_running_stats
        stats = torch.zeros(2, b // self.group_size, self.num_features, device=x.device) \
            if track else None
        y = torch.cat([
            F.batch_norm(chunk, stats[0, i] if track else None, stats[1, i] if track else None,
                         self.weight, self.bias, True, 1.0, self.eps)
            for i, chunk in enumerate(x.split(self.group_size))])
        if track:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(stats[0].mean(0), alpha=m)
                self.running_var.mul_(1 - m).add_(stats[1].mean(0), alpha=m)
                self.num_batches_tracked += 1
        return y


def _replace_bn(module: nn.Module, make) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and type(module) is nn.BatchNorm2d:
        new = make(module)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, _replace_bn(child, make))
    return module


def bn_layout(group_size: int | None, per_rank_batch: int, world_size: int,
              device_type: str) -> str:
    """How BN statistics over ``group_size`` images are computed: ``"plain"`` (each process's
    batch), ``"ghost"`` (groups inside a process) or ``"sync"`` (SyncBatchNorm over
    ``group_size / per_rank_batch`` processes). Raises ``AblateError`` for layouts that cannot
    work; the driver calls it before launching anything."""
    if group_size is None or group_size == per_rank_batch:
        return "plain"
    if group_size < per_rank_batch:
        if per_rank_batch % group_size:
            raise AblateError(f"bn_group_size {group_size} does not divide the per-process "
                              f"batch {per_rank_batch}")
        return "ghost"
    if group_size % per_rank_batch or group_size // per_rank_batch > world_size:
        raise AblateError(f"bn_group_size {group_size} must be a multiple of the per-process "
                          f"batch {per_rank_batch} spanning at most the {world_size} processes")
    if device_type != "cuda":
        raise AblateError(f"bn_group_size {group_size} > per-process batch {per_rank_batch} "
                          "needs BN statistics synchronised across processes, which torch only "
                          "has on CUDA; on CPU run one process with the whole batch (BN over "
                          "the global batch) or smaller groups (ghost batches)")
    return "sync"


def convert_bn_groups(model: nn.Module, group_size: int | None, per_rank_batch: int,
                      world_size: int, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d compute statistics over ``group_size`` images.

    Args:
        group_size: images per statistics group; ``None`` = each process's batch.
        per_rank_batch: images per process per step.
    """
    layout = bn_layout(group_size, per_rank_batch, world_size, device.type)
    if layout == "plain":
        return model
    if layout == "ghost":
        return _replace_bn(model, lambda bn: GhostBatchNorm2d(
            bn.num_features, group_size, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
            track_running_stats=bn.track_running_stats))
    import torch.distributed as dist

    ranks_per_group = group_size // per_rank_batch
    groups = [dist.new_group(list(range(i, i + ranks_per_group)))
              for i in range(0, world_size, ranks_per_group)]
    pg = groups[dist.get_rank() // ranks_per_group]
    return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=pg)
