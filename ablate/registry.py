"""Name → factory registries.

Register by decorator, select by string, fail loudly: a duplicate name raises at import time and
an unknown name raises ``AblateError`` with a "did you mean" suggestion.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from ablate.errors import AblateError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from strings to factories (classes or functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("resnet")``; the default name is ``obj.__name__``."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the factory called ``name`` or raise ``AblateError``."""
        try:
            return self._items[name]
        except KeyError:
            raise AblateError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._items)}; "
                              f"known: {', '.join(sorted(self._items))}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


MODELS: Registry[Callable[..., Any]] = Registry("model")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
TASKS: Registry[Callable[..., Any]] = Registry("task")
TRICKS: Registry[type] = Registry("trick")
SCHEDULES: Registry[Callable[..., Any]] = Registry("schedule")
