"""Trick plug-ins. Importing this package registers every trick in ``TRICKS``."""

from __future__ import annotations

from typing import Any, Mapping

from ablate.errors import AblateError, did_you_mean
from ablate.registry import TRICKS
from ablate.tricks import (  # noqa: F401  (imports register the tricks)
    amp,
    cosine,
    data_augmentation,
    distill,
    label_smoothing,
    linear_scaling,
    mixup,
    no_bias_decay,
    random_shapes,
    sync_bn,
    warmup,
    zero_gamma,
)
from ablate.tricks.base import BuildContext, Hook, TrainState, Trick

__all__ = ["BuildContext", "Hook", "TrainState", "Trick", "build_tricks", "check_tricks"]


def check_tricks(names: list[str], task: str) -> None:
    """Raise ``AblateError`` for an unknown trick, a task mismatch or a conflict."""
    for n in names:
        if n not in TRICKS:
            raise AblateError(f"unknown trick '{n}'{did_you_mean(n, TRICKS)}")
        cls = TRICKS.get(n)
        if task not in cls.tasks:
            raise AblateError(f"trick '{n}' does not apply to the {task} task "
                              f"(it supports: {', '.join(cls.tasks)})")
    for n in names:
        for other in TRICKS.get(n).conflicts:
            if other in names:
                raise AblateError(f"tricks '{n}' and '{other}' conflict: use one or the other")


def build_tricks(cfg: Mapping[str, Mapping[str, Any]] | None, task: str) -> list[Trick]:
    """Instantiate the selected tricks (``cfg`` = the ``tricks`` node) in their fixed order."""
    cfg = dict(cfg or {})
    check_tricks(list(cfg), task)
    tricks = []
    for n, opts in cfg.items():
        cls = TRICKS.get(n)
        t = cls.__new__(cls)
        t.task = task  # known before __init__ so that task-dependent defaults can be chosen
        t.__init__(**dict(opts or {}))
        tricks.append(t)
    return sorted(tricks, key=lambda t: t.order)
