"""Datasets. Each registers a ``DataSource``: ``build(**cfg, batch_size=…, rank=…, …)`` returns
``(train_loader, eval_loader)`` and ``check(**cfg)`` fails early when the data is missing or
malformed, and returns the number of training images where it knows it without reading them
all (else None): the driver checks a run's iteration counts with it before launching.

Sources are registered by name with their functions given as ``"module:function"`` and imported
on first call, so that checking a study does not import torchvision or pycocotools.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ablate.registry import DATASETS


def _lazy(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    return call


@dataclass(frozen=True)
class DataSource:
    build: Callable[..., tuple[Any, Any]]
    check: Callable[..., None]
    tasks: tuple[str, ...]


_SOURCES = {
    "fashion_mnist": ("ablate.data.fashion_mnist", "build_fashion_mnist", "check_fashion_mnist",
                      ("classification",)),
    "imagenet": ("ablate.data.imagenet", "build_imagenet", "check_imagenet",
                 ("classification",)),
    "voc": ("ablate.data.detection_sources", "build_voc_loaders", "check_voc", ("yolo", "rcnn")),
    "coco": ("ablate.data.detection_sources", "build_coco_loaders", "check_coco",
             ("yolo", "rcnn")),
    "fashion_scenes": ("ablate.data.detection_sources", "build_fashion_scenes_loaders",
                       "check_fashion_scenes", ("yolo", "rcnn")),
}
for _name, (_mod, _build, _check, _tasks) in _SOURCES.items():
    DATASETS.register(_name)(DataSource(_lazy(f"{_mod}:{_build}"), _lazy(f"{_mod}:{_check}"),
                                        _tasks))
