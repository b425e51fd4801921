"""Datasets. Each registers a ``DataSource``: ``build(**cfg, batch_size=…, rank=…, …)`` returns
``(train_loader, eval_loader)`` and ``check(**cfg)`` fails early when the data is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ablate.registry import DATASETS


@dataclass(frozen=True)
class DataSource:
    build: Callable[..., tuple[Any, Any]]
    check: Callable[..., None]
    tasks: tuple[str, ...]


def _register() -> None:
    from ablate.data import detection_sources
    from ablate.data import fashion_mnist as fm

    DATASETS.register("fashion_mnist")(
        DataSource(fm.build_fashion_mnist, fm.check_fashion_mnist, ("classification",)))
    detection_sources.register(DATASETS)


_register()
