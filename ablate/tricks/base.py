"""The trick plug-in interface.

A trick is one small class. It declares the tasks it supports and the tricks it conflicts with
(both checked when a study is validated) and overrides only the extension points it needs; every
other point is the identity. The engine collects the points once at setup and calls them
unconditionally, so the training loop never names a trick.

``order`` fixes the order in which tricks apply, whatever order a study lists them in: a shape
that *replaces* the schedule (cosine) must come before one that *wraps* it (warmup).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ablate.engine.types import BuildContext, DataContext, Hook, TrainState
from ablate.errors import AblateError
from ablate.solver.lr import LRShape

__all__ = ["BuildContext", "DataContext", "Hook", "TrainState", "Trick"]


class Trick:
    """Base class: every extension point is the identity."""

    name: ClassVar[str]
    task: str = "classification"  # set by build_tricks: one trick name can serve several tasks
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    conflicts: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 0

    def __init__(self, **options: Any) -> None:
        if options:
            raise AblateError(f"trick '{self.name}' takes no option "
                              f"{', '.join(repr(k) for k in options)}")

    # --- extension points -------------------------------------------------------------
    def edit_model(self, model: nn.Module, ctx: BuildContext) -> nn.Module:
        return model

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        return targets

    def batch_transform(self, batch: dict[str, Any], state: TrainState) -> dict[str, Any]:
        return batch

    def param_groups(self, model: nn.Module, groups: list[dict]) -> list[dict]:
        return groups

    def base_lr(self, lr: float, ctx: BuildContext) -> float:
        return lr

    def schedule(self, shape: LRShape, ctx: BuildContext, base_lr: float) -> LRShape:
        return shape

    def precision(self, name: str) -> str:
        return name

    def bn_group_size(self, size: int | None, ctx: BuildContext) -> int | None:
        return size

    # --- data points: the training pipeline calls them (``ablate.data.loading.DataPlugins``)
    def wrap_dataset(self, dataset: Any, ctx: DataContext) -> Any:
        """Wrap the raw training set (detection mixup's pairs)."""
        return dataset

    def sample_transform(self, transform: Any, ctx: DataContext) -> Any:
        """Replace the pipeline's per-sample training transform (detection augmentation)."""
        return transform

    def batch_side(self, side: int, iteration: int, ctx: DataContext) -> int:
        """The square side training batch ``iteration`` (the global batch index) is built at,
        given the pipeline's training side (random shapes): each image is transformed to it
        once, in the workers."""
        return side

    def loader_batch(self, batch: dict[str, Any], iteration: int, ctx: DataContext
                     ) -> dict[str, Any]:
        """Change a training batch on the device before the task reads it; ``iteration`` is
        the global batch index."""
        return batch

    def wrap_task(self, task: Any) -> Any:
        return task

    def hooks(self) -> list[Hook]:
        """Callbacks at the trainer's events (``ablate.engine.types.Hook``), e.g. a weight
        average updated after each step."""
        return []

    def describe(self) -> dict[str, Any]:
        """Options as recorded in results (the effective variant of the trick)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "task"}

    @classmethod
    def overrides(cls, point: str) -> bool:
        """True when this trick's class implements extension point ``point``."""
        return getattr(cls, point) is not getattr(Trick, point)

    def uses(self, point: str) -> bool:
        """True when this trick, for its task, acts through ``point``: the engine collects
        only those (a trick serving several tasks may use a point for one of them only)."""
        return self.overrides(point)
