"""Values from YAML checked against Python annotations: the options of tricks (their
constructors) and of datasets (their build functions) are typed by their signatures, so that an
unknown option or a value of the wrong type is refused by name before anything runs."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from ablate.errors import AblateError, did_you_mean


def fits(value: Any, kind: Any) -> bool:
    """``value`` (from YAML) is of the annotated type ``kind``: an int is a float, a bool is
    not a number, ``X | None`` takes null, ``list[int]`` checks its items."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind) or (Any,)
        return isinstance(value, (list, tuple)) and all(fits(v, item) for v in value)
    if origin is not None:  # Mapping[...], dict[...]
        return isinstance(value, origin)
    return isinstance(value, kind)


def type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(type_name(k) for k in typing.get_args(kind))
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string",
             type(None): "null"}
    if kind in names:
        return names[kind]
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind) or (Any,)
        return f"a list of {type_name(item).split(' ', 1)[-1]}s"
    return "a mapping" if origin is not None else getattr(kind, "__name__", str(kind))


def keyword_options(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keyword parameters of ``fn`` and their annotations (``Any`` where none), following
    ``**kwargs`` into the function named by ``fn.forwards_to`` (see ``forwards_to``)."""
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that does not resolve: names only
        hints = {}
    out: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            target = getattr(fn, "forwards_to", None)
            if target is None:
                raise TypeError(f"{fn.__qualname__} takes **{p.name}: untyped options")
            out.update({k: v for k, v in keyword_options(target).items() if k not in out})
        elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
            out[p.name] = hints.get(p.name, Any)
    return out


def forwards_to(target: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Mark a function whose ``**kwargs`` go to ``target``: its options include target's."""
    def mark(fn: Callable) -> Callable:
        fn.forwards_to = target
        return fn
    return mark


def check_options(given: Mapping[str, Any], options: Mapping[str, Any], where: str,
                  also: Iterable[str] = ()) -> None:
    """Every key of ``given`` is one of ``options`` (or ``also``) and of its annotated type."""
    for key, value in given.items():
        if key in options:
            kind = options[key]
            if kind is not Any and not fits(value, kind):
                raise AblateError(f"{where}.{key}={value!r}: must be {type_name(kind)}")
        elif key not in also:
            raise AblateError(f"{where}.{key}: unknown option"
                              f"{did_you_mean(key, [*options, *also])}")
