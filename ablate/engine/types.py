"""The engine's shared types, in a leaf module (it imports no other ``ablate`` module): what a
trick may know at setup (``DataContext`` for the data, ``BuildContext`` after), where training
stands (``TrainState``) and the
callbacks the trainer calls at fixed points (``Hook``). Tricks, the build and the step loop all
use them; ``ablate.tricks.base`` re-exports them for tricks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    weights: str | None = None  # the checkpoint the model's weights were loaded from, if any

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
    iteration: int = 0  # 0-based global iteration (optimizer step)
    epochs: int = 1
    iters_per_epoch: int = 1
    seed: int = 0  # the run's seed: a draw keyed by (seed, iteration) is the same on every
    # rank and every micro-batch of a step


class Hook:
    """Called by the trainer at fixed events, detectron2's way; override what you need.

    The trainer sets ``self.trainer`` when it registers the hook; a hook reads and writes what
    it needs there (``trainer.state``, the open epoch record ``trainer.row``, ``trainer.model``).
    Events, in order: ``before_train`` (also on resume), then per epoch ``before_epoch``,
    ``after_step`` after each optimizer step, and ``after_epoch`` once the epoch's record is
    closed (``state.epoch`` counts the epochs done; ``trainer.row`` is the record, already in
    ``trainer.history``); ``after_train`` when the last epoch is done. A trick's hooks run
    before the engine's own (evaluation, checkpoint, log), in the order the tricks apply.
    """

    trainer: Any = None

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...
