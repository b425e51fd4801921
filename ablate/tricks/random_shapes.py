"""Random training shapes (YOLOv2/v3 multi-scale training; Bag of Freebies Table 3).

Every ``every`` iterations one size is drawn from ``sizes`` and the whole batch is built at it;
evaluation stays at the fixed size. ``sizes: null`` = 320…608 step 32, scaled proportionally to
the training size of proxies (``scaled_sizes``: a 160 px proxy trains on 128, 160, 192 and
224). The size reaches the data layer through its ``batch_side`` point: every image of the
batch is augmented and resized to the drawn size once, in the workers, as GluonCV's
``RandomTransformDataLoader`` does (never augmented at 416 and interpolated again); the task
builds its targets at that size.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from ablate.data.loading import SHAPES_STREAM, item_generator
from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import DataContext, Trick

BASE_SIZE = 416  # the paper's training size, which its sizes belong to


@functools.lru_cache(maxsize=None)
def scaled_sizes(base: int = BASE_SIZE, proxy: int = 160, multiple: int | None = None
                 ) -> tuple[int, ...]:
    """The random training shapes {320, 352, …, 608} scaled by ``proxy / base``.

    Each size is rounded to the nearest multiple of ``multiple`` (duplicates removed). By
    default that is 32, which a stride-32 network needs for its up-sampled maps to line up,
    unless fewer than 3 distinct sizes remain (proxies under ~80 px): then 8, which needs a
    head that aligns its maps itself. ``scaled_sizes(416, 416)`` is the paper's set;
    ``scaled_sizes(416, 160)`` is (128, 160, 192, 224).
    """
    if base < 1 or proxy < 1:
        raise AblateError(f"scaled_sizes needs positive sizes, got base={base}, proxy={proxy}")
    raw = [s * proxy / base for s in range(320, 609, 32)]

    def rounded(m: int) -> tuple[int, ...]:
        return tuple(sorted({max(m, m * int(np.floor(s / m + 0.5))) for s in raw}))

    if multiple is None:
        multiple = 32 if len(rounded(32)) >= 3 else 8
    return rounded(int(multiple))


class RandomShapes:
    """Random training shapes (YOLOv3): one size per ``every`` iterations for the whole batch.

    The size for iteration t is drawn uniformly from ``sizes`` by a generator seeded with
    (seed, t // every), so it is the same on every rank and after a resume.

    Args:
        sizes: candidate square sizes (e.g. ``scaled_sizes(...)`` for proxies).
        every: iterations per size.
        seed: base seed.
    """

    def __init__(self, sizes: Sequence[int] = range(320, 609, 32), every: int = 10,
                 seed: int = 0) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        if not self.sizes or min(self.sizes) < 1 or every < 1:
            raise AblateError(f"RandomShapes needs positive sizes and every >= 1, got "
                              f"{self.sizes}, {every}")
        self.every, self.seed = int(every), seed

    def size_at(self, iteration: int) -> int:
        """The size used at ``iteration``."""
        g = item_generator(self.seed, iteration // self.every, 0, SHAPES_STREAM)
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]


@TRICKS.register("random_shapes")
class RandomShapesTrick(Trick):
    name = "random_shapes"
    tasks = ("yolo",)

    def __init__(self, sizes: list[int] | None = None, every: int = 10) -> None:
        if every < 1:
            raise AblateError(f"random_shapes.every must be >= 1, got {every}")
        if sizes is not None and (not sizes or any(int(s) <= 0 for s in sizes)):
            raise AblateError(f"random_shapes.sizes must be positive sizes, got {sizes}")
        self.sizes = None if sizes is None else [int(s) for s in sizes]
        self.every = int(every)
        self._shapes: dict[tuple[int, int], RandomShapes] = {}

    def shapes(self, train_size: int, seed: int) -> RandomShapes:
        """The ``RandomShapes`` for batches of side ``train_size`` (``sizes: null`` scales the
        paper's set to it)."""
        key = (int(train_size), int(seed))
        if key not in self._shapes:
            sizes = self.sizes or scaled_sizes(BASE_SIZE, int(train_size))
            self._shapes[key] = RandomShapes(sizes, self.every, seed=int(seed))
        return self._shapes[key]

    def batch_side(self, side: int, iteration: int, ctx: DataContext) -> int:
        return self.shapes(side, ctx.seed).size_at(iteration)
