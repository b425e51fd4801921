"""Process-group helpers. Workers are started by torchrun or a SLURM job (or run in-process for
tests): the environment variables RANK / WORLD_SIZE / LOCAL_RANK say who we are.

What every rank shares and what it draws on its own:

- the initial weights: every rank seeds ``torch.manual_seed(seed)`` before building the model
  (and DDP broadcasts rank 0's parameters anyway), so all ranks start identical;
- the data order: the training sampler draws one permutation per epoch from (seed, epoch), the
  same on every rank, pads it by wrapping around to a multiple of the world size and gives rank
  r every world-th index (``DistributedSampler``); each rank drops its last partial batch, so all
  ranks take the same number of steps. The union of the ranks' step-i batches is the same set of
  images whatever the world size (when no padding was needed), so a global batch means the same
  thing on 1 or 8 processes. Evaluation shards without padding: each image is scored once;
- augmentation and batch transforms (crops, flips): drawn from the global RNG, seeded per
  (seed, epoch, rank) by :func:`epoch_seed`, so ranks draw different values (as per-GPU
  pipelines do) and a resumed run replays the same draws — on the same world size. A draw that
  must be one per optimizer step on every rank (classification mixup's λ) is keyed by (seed,
  iteration) instead (``TrainState.seed``);
- BatchNorm running statistics: each rank updates its own from its batch; DDP overwrites them
  with rank 0's before every training forward, and :func:`sync_buffers` does the same before
  evaluation and checkpoints, so every rank evaluates exactly the model that is saved.

One process writes (``is_main``): the first rank on node 0. torchrun's c10d rendezvous numbers
nodes in its own order, so global rank 0 may live on another node; the launcher says which node
it started through ``ABLATE_NODE_RANK``, and the group agrees on the writer at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

NODE_RANK_ENV = "ABLATE_NODE_RANK"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    main_rank: int = 0  # the one rank that writes files and progress lines

    @property
    def is_main(self) -> bool:
        return self.rank == self.main_rank


def per_rank_batch(batch_size: int, world_size: int, accum_steps: Any) -> int:
    """Images each process loads per micro-step: ``train.batch_size`` is the global batch of
    one optimizer step, ``world_size × accum_steps × per_rank``."""
    from ablate.errors import AblateError

    if not isinstance(accum_steps, int) or accum_steps < 1:
        raise AblateError(f"train.accum_steps must be a positive integer, got {accum_steps!r}")
    if batch_size % (world_size * accum_steps):
        raise AblateError(f"train.batch_size={batch_size} is not divisible by the "
                          f"{world_size} processes × train.accum_steps={accum_steps}")
    return batch_size // (world_size * accum_steps)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA) and pick the device."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    main = 0
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        main = _first_rank_on_node0(int(os.environ.get(NODE_RANK_ENV, 0)), world)
    return DistInfo(rank, world, local, dev, main)


def _first_rank_on_node0(node_rank: int, world: int) -> int:
    nodes: list[Any] = [None] * world
    dist.all_gather_object(nodes, node_rank)
    return min((r for r, n in enumerate(nodes) if n == 0), default=0)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one element without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int) -> Any:
    """``src``'s ``obj`` on every rank (pickled; tensors arrive on the CPU)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_buffers(model: nn.Module, src: int) -> None:
    """Copy ``src``'s buffers (BN running statistics) to every rank, as DDP does before each
    training forward: after the last step each rank holds statistics of its own batch."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch, rank).

    Resuming at an epoch boundary replays exactly the same augmentation draws on the same world
    size. On another world size the ranks (and their batches) differ, so the draws
    do too: the data order and the global batches stay the same, the random transforms do not.
    """
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63 - 1)
