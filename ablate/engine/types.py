"""The engine's shared types, in a leaf module (it imports no other ``ablate`` module): what a
trick may know at setup (``DataContext`` for the data, ``BuildContext`` after), where training
stands (``TrainState``) and the
callbacks the trainer calls at fixed points (``Hook``). Tricks, the build and the step loop all
use them; ``ablate.tricks.base`` re-exports them for tricks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BuildContext:
    """What a trick may need to know at setup."""

    task: str
    epochs: int
    iters_per_epoch: int
    total_batch: int  # images per optimizer step, across all processes
    world_size: int = 1
    num_classes: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def total_iters(self) -> int:
        return self.epochs * self.iters_per_epoch


@dataclass(frozen=True)
class DataContext:
    """What a trick may need to know when the training pipeline is built (before the model:
    the steps per epoch are not known yet)."""

    task: str
    epochs: int
    seed: int = 0


@dataclass
class TrainState:
    """Where training stands; handed to batch transforms and hooks."""

    epoch: int = 0  # 0-based epoch being trained
    iteration: int = 0  # 0-based global iteration
    epochs: int = 1
    iters_per_epoch: int = 1


class Hook:
    """Called by the trainer at fixed points; override what you need."""

    def before_epoch(self, state: TrainState) -> None: ...

    def after_epoch(self, state: TrainState) -> None: ...
