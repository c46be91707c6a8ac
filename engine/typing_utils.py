"""Turning type annotations into fast runtime checks (handlers are chosen by ``isinstance``)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

Matcher = Callable[[Any], bool]


def _always(_: Any) -> bool:
    return True


def is_catch_all(annotation: Any) -> bool:
    return (
        annotation in (Any, object, None)
        or annotation is typing.Any
        or isinstance(annotation, typing.TypeVar)
    )


def flatten_union(annotation: Any) -> tuple[Any, ...]:
    """``A | B`` and ``Union[A, B]`` as ``(A, B)``; anything else as a 1-tuple."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        out: tuple[Any, ...] = ()
        for arg in typing.get_args(annotation):
            out += flatten_union(arg)
        return out
    return (annotation,)


def matcher_for(annotation: Any) -> Matcher:
    """A predicate telling whether a value is an instance of ``annotation``.

    Supports classes, unions, ``Any``/``object`` (everything), ``list[T]`` (every element a ``T``, as a fan-in
    join receives) and other generics by their origin class.
    """
    if is_catch_all(annotation):
        return _always
    options = flatten_union(annotation)
    if len(options) > 1:
        matchers = [matcher_for(option) for option in options]
        if any(m is _always for m in matchers):
            return _always
        return lambda value: any(m(value) for m in matchers)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        return lambda value: value in allowed
    if origin in (list, typing.List):  # noqa: UP006 - both spellings occur in user code
        args = typing.get_args(annotation)
        item = matcher_for(args[0]) if args else _always
        if item is _always:
            return lambda value: isinstance(value, list)
        return lambda value: isinstance(value, list) and all(item(x) for x in value)
    if origin is not None and isinstance(origin, type):
        return lambda value: isinstance(value, origin)
    if annotation is type(None):
        return lambda value: value is None
    if isinstance(annotation, type):
        return lambda value: isinstance(value, annotation)
    raise TypeError(f"cannot route messages by the annotation {annotation!r}")


def accepts(annotation: Any, produced: Any) -> bool:
    """Whether a value declared as ``produced`` can be taken by a parameter annotated ``annotation``.

    Used at build time to check edges; generous where it cannot be sure (a wrong "no" would reject a valid
    graph, a wrong "yes" only defers the check to run time, where the message is dropped with a warning).
    """
    if is_catch_all(annotation) or is_catch_all(produced):
        return True
    targets = flatten_union(annotation)
    produced_options = flatten_union(produced)
    return any(_accepts_one(t, p) for t in targets for p in produced_options)


def _accepts_one(target: Any, produced: Any) -> bool:
    if is_catch_all(target) or is_catch_all(produced):
        return True
    t_origin, p_origin = typing.get_origin(target) or target, typing.get_origin(produced) or produced
    if not isinstance(t_origin, type) or not isinstance(p_origin, type):
        return True
    if not issubclass(p_origin, t_origin):
        return False
    t_args, p_args = typing.get_args(target), typing.get_args(produced)
    if t_origin is list and t_args and p_args:
        return accepts(t_args[0], p_args[0])
    return True
