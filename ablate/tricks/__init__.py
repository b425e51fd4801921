"""Trick plug-ins. Importing this package registers every trick in ``TRICKS``."""

from __future__ import annotations

import types
import typing
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


def _fits(value: Any, kind: Any) -> bool:
    """``value`` (from YAML) is of the annotated type ``kind``: an int is a float, a bool is
    not a number, ``X | None`` takes null, ``list[int]`` checks its items."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind) or (Any,)
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if origin is not None:  # Mapping[...], dict[...]
        return isinstance(value, origin)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string",
             type(None): "null"}
    if kind in names:
        return names[kind]
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind) or (Any,)
        return f"a list of {_type_name(item).split(' ', 1)[-1]}s"
    return "a mapping" if origin is not None else getattr(kind, "__name__", str(kind))


def check_option_types(cls: type[Trick], options: Mapping[str, Any]) -> None:
    """Each option of trick ``cls`` has the type its constructor declares, so that a value of
    the wrong type (``warmup.epochs: five``) is refused by name before anything runs."""
    hints = typing.get_type_hints(cls.__init__)
    for key, value in options.items():
        kind = hints.get(key)
        if kind is not None and not _fits(value, kind):
            raise AblateError(f"tricks.{cls.name}.{key}={value!r}: must be {_type_name(kind)}")


def build_tricks(cfg: Mapping[str, Mapping[str, Any]] | None, task: str) -> list[Trick]:
    """Instantiate the selected tricks (``cfg`` = the ``tricks`` node) in their fixed order."""
    cfg = dict(cfg or {})
    check_tricks(list(cfg), task)
    tricks = []
    for n, opts in cfg.items():
        cls = TRICKS.get(n)
        check_option_types(cls, dict(opts or {}))
        t = cls.__new__(cls)
        t.task = task  # known before __init__ so that task-dependent defaults can be chosen
        t.__init__(**dict(opts or {}))
        tricks.append(t)
    return sorted(tricks, key=lambda t: t.order)
