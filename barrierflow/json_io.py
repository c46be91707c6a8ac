"""JSON in and out of workflows, for every front end (the CLI, the HTTP server).

Out: ``jsonable`` turns whatever handlers produced into something ``json.dumps`` accepts, never raising
(dataclasses and pydantic models become objects, enums their values, datetimes ISO strings, anything else its
``repr``).

In: ``from_json`` turns a decoded JSON value into the type a handler or a request declared (a dataclass, a
pydantic model, an enum, primitives and the containers of them), checking as it goes; a value that does not fit
raises ``JsonInputError`` naming the field (``input.draft.revision``). Nothing is imported or evaluated from the
value: only the declared types are instantiated, with plain JSON data. ``start_input`` picks the start
executor's handler that takes a value, as ``Workflow.run`` would route it.

Standard library only (pydantic is used when the declared type is a pydantic model, through its own methods).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

_MAX_DEPTH = 40


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as something ``json.dumps`` accepts, never raising."""
    if _depth > _MAX_DEPTH:
        return repr(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, _depth + 1)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name, None), _depth + 1) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if dump is not None and not isinstance(value, type):
        try:
            return jsonable(dump(mode="json"), _depth + 1)
        except Exception:
            return repr(value)
    if isinstance(value, Mapping):
        return {
            k if isinstance(k, str) else str(jsonable(k, _depth + 1)): jsonable(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [jsonable(v, _depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return [jsonable(v, _depth + 1) for v in sorted(value, key=repr)]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, type):
        return value.__qualname__
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


class JsonInputError(ValueError):
    """A JSON value that does not fit the declared type; ``field`` is where (``input.draft.revision``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


def type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _join(field: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{field}[{part}]"
    return f"{field}.{part}" if field else part


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _unfit(field: str, value: Any, annotation: Any) -> JsonInputError:
    return JsonInputError(field, f"expected {type_name(annotation)}, got {_kind(value)}")


def from_json(value: Any, annotation: Any, field: str = "") -> Any:
    """``value`` (decoded JSON) as an instance of ``annotation``; ``JsonInputError`` naming the field if not.

    ``Any``/``object``/unannotated: the value as it is. A value that already is an instance passes.
    """
    if annotation in (Any, object, None) or isinstance(annotation, typing.TypeVar):
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise _unfit(field, value, annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _from_union(value, annotation, args, field)
    if origin is typing.Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise JsonInputError(field, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
    if origin is typing.Annotated:
        return from_json(value, args[0], field)
    if origin is not None:
        return _from_generic(value, origin, args, field, annotation)
    if not isinstance(annotation, type):
        return value  # a form we do not know (a NewType, a string annotation): no conversion
    return _from_class(value, annotation, field)


def _from_union(value: Any, annotation: Any, options: tuple[Any, ...], field: str) -> Any:
    # an exact JSON kind first (1 stays an int for ``int | float``), then conversions
    for option in options:
        if isinstance(option, type) and not typing.get_args(option) and _exact(value, option):
            return value
    errors = []
    for option in options:
        try:
            return from_json(value, option, field)
        except JsonInputError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    deeper = [e for e in errors if e.field != field]
    if len(deeper) == 1:  # only one option had the right shape: its error says more
        raise deeper[0]
    raise _unfit(field, value, annotation)


def _exact(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return kind in (int, float, str) and type(value) is kind


def _from_generic(value: Any, origin: Any, args: tuple[Any, ...], field: str, annotation: Any) -> Any:
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, list | tuple):
            raise _unfit(field, value, annotation)
        item = args[0] if args else Any
        items = [from_json(v, item, _join(field, i)) for i, v in enumerate(value)]
        return origin(items) if origin is not list else items
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise JsonInputError(field, f"expected an array of {len(args)} items ({type_name(annotation)})")
        return tuple(from_json(v, t, _join(field, i)) for i, (v, t) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        if not isinstance(value, Mapping):
            raise _unfit(field, value, annotation)
        key_type, item_type = args if len(args) == 2 else (Any, Any)
        return {
            from_json(k, key_type, field): from_json(v, item_type, _join(field, str(k)))
            for k, v in value.items()
        }
    if isinstance(origin, type):
        return _from_class(value, origin, field)
    return value


def _from_class(value: Any, cls: type, field: str) -> Any:
    if _exact(value, cls) or (isinstance(value, cls) and not isinstance(value, bool | int | float | str)):
        return value
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if cls in (bool, int, float, str):
        raise _unfit(field, value, cls)
    if issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise JsonInputError(
                field, f"expected one of {allowed} ({cls.__name__}), got {value!r}"
            ) from None
    if dataclasses.is_dataclass(cls):
        return _from_dataclass(value, cls, field)
    validate = getattr(cls, "model_validate", None)
    if validate is not None:
        return _from_model(value, cls, validate, field)
    if cls in (list, tuple, set, frozenset, dict):
        return _from_generic(value, cls, (), field, cls)
    if cls in (datetime, date, time) and isinstance(value, str):
        try:
            return cls.fromisoformat(value)  # type: ignore[attr-defined]
        except ValueError:
            raise JsonInputError(field, f"expected an ISO {cls.__name__}, got {value!r}") from None
    if cls in (UUID, Decimal) and isinstance(value, str):
        try:
            return cls(value)
        except (ValueError, ArithmeticError):
            raise JsonInputError(field, f"expected a {cls.__name__}, got {value!r}") from None
    raise _unfit(field, value, cls)


def _from_dataclass(value: Any, cls: type, field: str) -> Any:
    if not isinstance(value, Mapping):
        raise _unfit(field, value, cls)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise JsonInputError(
            _join(field, str(unknown[0])),
            f"{cls.__name__} has no field {unknown[0]!r} (fields: {', '.join(fields)})",
        )
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = from_json(value[name], hints.get(name, Any), _join(field, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise JsonInputError(_join(field, name), f"missing (required by {cls.__name__})")
    try:
        return cls(**kwargs)
    except Exception as exc:  # the class's own __post_init__ checks
        raise JsonInputError(field, f"{cls.__name__} refused it: {type(exc).__name__}: {exc}") from None


def _from_model(value: Any, cls: type, validate: Any, field: str) -> Any:
    try:
        return validate(value)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        first = errors()[0] if callable(errors) and errors() else None
        if first is not None:
            where = field
            for part in first.get("loc", ()):
                where = _join(where, part)
            raise JsonInputError(where, f"{first.get('msg', exc)} ({cls.__name__})") from None
        raise JsonInputError(field, f"{cls.__name__} refused it: {exc}") from None


def _depth(field: str) -> int:
    return field.count(".") + field.count("[")


def start_input(executor: Any, value: Any, field: str = "input") -> Any:
    """``value`` as a message the start ``executor`` has a handler for (specific handlers first, as routed).

    ``JsonInputError`` when no handler takes it: the error of the only handler, or the types accepted.
    """
    errors = []
    for spec in executor.handler_specs:
        try:
            message = from_json(value, spec.message_type, field)
        except JsonInputError as exc:
            errors.append(exc)
            continue
        if executor.can_handle(message):
            return message
    if len(errors) == 1:
        raise errors[0]
    deepest = max((_depth(e.field) for e in errors), default=0)
    furthest = [e for e in errors if _depth(e.field) == deepest]
    if deepest > _depth(field) and len(furthest) == 1:  # one handler's type fitted the value furthest
        raise furthest[0]
    tried = "; ".join(
        f"{type_name(spec.message_type)}: {error}" for spec, error in zip(executor.handler_specs, errors)
    )
    raise JsonInputError(field, f"fits none of the types the start executor {executor.id!r} takes ({tried})")
