"""Per-iteration learning-rate shapes: pure functions of the iteration number.

A shape returns the multiplier of the base LR at a 0-based global iteration. Schedules are
updated every iteration, never every epoch (Bag of Tricks, Sec. 5.1; Bag of Freebies, Sec. 3.3).
Warmup is a wrapper (detectron2 style) so that any shape can be warmed up and ablated.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, Sequence


class LRShape(Protocol):
    start: int

    def __call__(self, it: int) -> float: ...


@dataclass(frozen=True)
class ConstantShape:
    start: int = 0

    def __call__(self, it: int) -> float:
        return 1.0


@dataclass(frozen=True)
class StepShape:
    """``factor ** k`` where k = number of milestones (absolute iterations) passed; with one
    factor per milestone, the product of those passed (MegDet's long policy: ×0.1, ×0.1, ×0.5)."""

    milestones: tuple[int, ...]
    factor: float | tuple[float, ...] = 0.1
    start: int = 0  # milestones are absolute, so a warmup in front does not move them

    def __call__(self, it: int) -> float:
        k = bisect.bisect_right(self.milestones, it)
        if isinstance(self.factor, tuple):
            return math.prod(self.factor[:k])
        return self.factor ** k


@dataclass(frozen=True)
class CosineShape:
    """``r + (1 − r)(1 + cos(π t / T)) / 2`` over iterations ``start … total − 1``.

    ``t = it − start`` and ``T = total − 1 − start``, so the multiplier is 1 at the first
    iteration after warmup and exactly ``r = target_lr / base_lr`` at the last one.
    """

    total: int
    target_ratio: float = 0.0
    start: int = 0

    def __call__(self, it: int) -> float:
        span = self.total - 1 - self.start
        t = min(max(it - self.start, 0), max(span, 0))
        if span <= 0:
            return 1.0
        return self.target_ratio + (1 - self.target_ratio) * (1 + math.cos(math.pi * t / span)) / 2


@dataclass(frozen=True)
class WarmupShape:
    """Linear warmup over ``iters`` iterations: ``f + (1 − f)(it + 1) / iters`` from the start
    factor ``f`` (0: the first step uses base/iters, not 0; GluonCV's COCO detectors start
    at 1/3), then the inner shape, which starts where the warmup ends."""

    inner: LRShape
    iters: int
    start: int = 0
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner", dataclasses.replace(self.inner, start=self.iters))

    def __call__(self, it: int) -> float:
        if it < self.iters:
            return self.start_factor + (1 - self.start_factor) * (it + 1) / self.iters
        return self.inner(it)


def epochs_to_iters(epochs: Sequence[float], iters_per_epoch: int) -> tuple[int, ...]:
    return tuple(int(round(e * iters_per_epoch)) for e in epochs)
