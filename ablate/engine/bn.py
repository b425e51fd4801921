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
        g = b // self.group_size
        xg = x.float().reshape(g, self.group_size, *x.shape[1:])
        dims = (1, 3, 4)
        mean = xg.mean(dims, keepdim=True)
        var = xg.var(dims, unbiased=False, keepdim=True)
        y = (xg - mean) * torch.rsqrt(var + self.eps)
        y = y.reshape_as(x).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                n = self.group_size * x.shape[2] * x.shape[3]
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.flatten(1).mean(0), alpha=m)
                unbiased = var.flatten(1) * n / max(n - 1, 1)
                self.running_var.mul_(1 - m).add_(unbiased.mean(0), alpha=m)
                self.num_batches_tracked += 1
        return y.contiguous(memory_format=torch.channels_last) \
            if x.is_contiguous(memory_format=torch.channels_last) else y


def _replace_bn(module: nn.Module, make) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and type(module) is nn.BatchNorm2d:
        new = make(module)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, _replace_bn(child, make))
    return module


def convert_bn_groups(model: nn.Module, group_size: int | None, per_rank_batch: int,
                      world_size: int, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d compute statistics over ``group_size`` images.

    Args:
        group_size: images per statistics group; ``None`` = each process's batch.
        per_rank_batch: images per process per step.
    """
    if group_size is None or group_size == per_rank_batch:
        return model
    if group_size < per_rank_batch:
        if per_rank_batch % group_size:
            raise AblateError(f"bn_group_size {group_size} does not divide the per-process "
                              f"batch {per_rank_batch}")
        return _replace_bn(model, lambda bn: GhostBatchNorm2d(
            bn.num_features, group_size, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
            track_running_stats=bn.track_running_stats))
    if group_size % per_rank_batch or group_size // per_rank_batch > world_size:
        raise AblateError(f"bn_group_size {group_size} must be a multiple of the per-process "
                          f"batch {per_rank_batch} spanning at most the {world_size} processes")
    if device.type != "cuda":
        raise AblateError(f"bn_group_size {group_size} > per-process batch {per_rank_batch} "
                          "needs BN statistics synchronised across processes, which torch only "
                          "has on CUDA; on CPU run one process with the whole batch (BN over "
                          "the global batch) or smaller groups (ghost batches)")
    import torch.distributed as dist

    ranks_per_group = group_size // per_rank_batch
    groups = [dist.new_group(list(range(i, i + ranks_per_group)))
              for i in range(0, world_size, ranks_per_group)]
    pg = groups[dist.get_rank() // ranks_per_group]
    return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=pg)
