"""Trick plug-ins. Importing this package imports every module in it, and so registers every
trick in ``TRICKS``: adding a trick is one ``.py`` here and one ``conf/tricks/<name>.yaml``, with
no list to edit."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from ablate.errors import AblateError, did_you_mean
from ablate.registry import TRICKS
from ablate.typed import check_options, keyword_options
from ablate.tricks.base import BuildContext, Hook, TrainState, Trick



def discover() -> list[str]:
    """Import every module of this package (``base`` and ``_private`` ones aside), which
    registers its tricks; return their names. Runs when the package is imported."""
    names = [m.name for m in pkgutil.iter_modules(__path__)
             if not m.name.startswith("_") and m.name != "base"]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


discover()

__all__ = ["BuildContext", "Hook", "TrainState", "Trick", "build_tricks", "check_tricks",
           "discover"]


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


def check_option_types(cls: type[Trick], options: Mapping[str, Any]) -> None:
    """Each option of trick ``cls`` is one its constructor takes, of the type it declares, so
    that a misspelt option or a value of the wrong type (``warmup.epochs: five``) is refused by
    name before anything runs."""
    if cls.__init__ is not Trick.__init__:  # (the base refuses every option itself)
        check_options(options, keyword_options(cls.__init__), f"tricks.{cls.name}")


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
