"""Datasets. Each registers a ``DataSource``: ``build(**cfg, batch_size=…, rank=…, …)`` returns
``(train_loader, eval_loader)`` and ``check(**cfg)`` fails early when the data is missing or
malformed, and returns the number of training images where it knows it without reading them
all (else None): the driver checks a run's iteration counts with it before launching.

A source's options are the keyword parameters of its two functions, typed by their
annotations: a data config key that neither takes (a typo, an option of another dataset) or a
value of the wrong type is an error naming it, before anything runs; each function is then
called with the keys it declares. ``num_classes``, ``in_chans`` (read by the model) and
``metric`` (read by the task) are known to every source; the run's own arguments
(``RUN_KEYS``: batch sizes, rank, seed, device, …) are not data options.

Sources are registered by name with their functions given as ``"module:function"`` and imported
on first call, so that checking a study does not import torchvision or pycocotools.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ablate.registry import DATASETS
from ablate.typed import check_options, keyword_options

SHARED_KEYS = ("num_classes", "in_chans", "metric")  # every data config has them
# what the run passes to ``build`` beside the data config
RUN_KEYS = ("batch_size", "eval_batch_size", "rank", "world_size", "seed", "device",
            "channels_last", "plugins")


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class DataSource:
    name: str
    builder: str  # "module:function"
    checker: str
    tasks: tuple[str, ...]

    def options(self) -> dict[str, Any]:
        """Every data option the source takes and its type (both functions' keywords, the
        run's own arguments aside)."""
        both = {**keyword_options(_resolve(self.checker)),
                **keyword_options(_resolve(self.builder))}
        return {k: v for k, v in both.items() if k not in RUN_KEYS}

    def _call(self, target: str, kwargs: dict[str, Any]) -> Any:
        fn = _resolve(target)
        takes = keyword_options(fn)
        return fn(**{k: v for k, v in kwargs.items() if k in takes})

    def build(self, **kwargs: Any) -> tuple[Any, Any]:
        """``kwargs``: the data config and the run's arguments (``RUN_KEYS``)."""
        config = {k: v for k, v in kwargs.items() if k not in RUN_KEYS}
        check_options(config, self.options(), "data", also=SHARED_KEYS)
        return self._call(self.builder, kwargs)

    def check(self, *, deep: bool = False, **kwargs: Any) -> int | None:
        """``deep`` (``ablate data prepare``): read every annotation, where the check can."""
        check_options(kwargs, self.options(), "data", also=SHARED_KEYS)
        return self._call(self.checker, {**kwargs, "deep": deep})


_SOURCES = {  # name: (build, check, tasks)
    "fashion_mnist": ("ablate.data.sources:build_fashion_mnist",
                      "ablate.data.datasets.fashion_mnist:check_fashion_mnist",
                      ("classification",)),
    "imagenet": ("ablate.data.sources:build_imagenet", "ablate.data.sources:check_imagenet",
                 ("classification",)),
    "voc": ("ablate.data.sources:build_voc_loaders", "ablate.data.sources:check_voc",
            ("yolo", "rcnn")),
    "coco": ("ablate.data.sources:build_coco_loaders", "ablate.data.sources:check_coco",
             ("yolo", "rcnn")),
    "fashion_scenes": ("ablate.data.sources:build_fashion_scenes_loaders",
                       "ablate.data.sources:check_fashion_scenes", ("yolo", "rcnn")),
}
for _name, (_build, _check, _tasks) in _SOURCES.items():
    DATASETS.register(_name)(DataSource(_name, _build, _check, _tasks))
