"""Executors: typed message handlers, as classes (``Executor`` + ``@handler``) or functions (``@executor``).

A handler is chosen per message by the annotated type of its message parameter. What a handler *sends* can be
declared (``WorkflowContext[T]`` or ``@handler(output=T)``) so the builder can check the edges it feeds.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import codec
from .context import WorkflowContext, context_output_types
from .errors import WorkflowValidationError
from .retry import INHERIT, RetryPolicy
from .typing_utils import Matcher, is_catch_all, matcher_for

_HANDLER_MARK = "__barrierflow_handler__"
_RESPONSE_MARK = "__barrierflow_response_handler__"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One handler: what it takes, what it declares it sends, and how to call it."""

    name: str
    message_type: Any
    matches: Matcher
    output_types: tuple[Any, ...] | None  # None: undeclared, not type-checked
    takes_context: bool
    is_async: bool = True  # sync handlers run on a handler thread (engine/handler_threads.py)
    passes_request: bool = False  # a response handler given the whole PendingRequest, not its data
    request_type: Any = None  # response handlers: the original request's type
    matches_request: Matcher | None = None


def handler(func: Callable[..., Any] | None = None, *, output: Any = None) -> Any:
    """Mark a method as a message handler. ``output`` declares what it sends (a type or a tuple of types)."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, _HANDLER_MARK, {"output": output})
        return f

    return mark(func) if func is not None else mark


def response_handler(func: Callable[..., Any] | None = None, *, output: Any = None) -> Any:
    """Mark a method ``(self, original_request, response, ctx)`` that receives answers to its own requests."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, _RESPONSE_MARK, {"output": output})
        return f

    return mark(func) if func is not None else mark


def _hints(func: Callable[..., Any], owner: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception as exc:  # NameError for a forward reference nobody can resolve, and friends
        raise WorkflowValidationError(
            f"cannot resolve the type annotations of {owner}.{func.__name__}: {exc}. Define the message types "
            "at module level (annotations are how handlers are chosen)"
        ) from exc


def _declared_outputs(output: Any, ctx_annotation: Any) -> tuple[Any, ...] | None:
    if output is not None:
        return tuple(output) if isinstance(output, (tuple, list)) else (output,)
    return context_output_types(ctx_annotation)


def _spec(
    func: Callable[..., Any], owner: str, *, skip_self: bool, response: bool, output: Any
) -> HandlerSpec:
    params = list(inspect.signature(func).parameters.values())
    if skip_self:
        params = params[1:]
    hints = _hints(func, owner)
    needed = 2 if response else 1
    if len(params) < needed:
        kind = "(original_request, response, ctx)" if response else "(message, ctx)"
        raise WorkflowValidationError(f"handler {owner}.{func.__name__} must take {kind}")
    ctx_param = params[needed] if len(params) > needed else None
    ctx_annotation = hints.get(ctx_param.name, WorkflowContext) if ctx_param else None
    message_type = hints.get(params[needed - 1].name, Any)
    request_type = hints.get(params[0].name, Any) if response else None
    for annotation in (message_type, request_type):
        if annotation is not None:
            codec.register_types_in_annotation(annotation)
    outputs = _declared_outputs(output, ctx_annotation)
    for produced in outputs or ():
        codec.register_types_in_annotation(produced)
    return HandlerSpec(
        name=func.__name__,
        message_type=message_type,
        matches=matcher_for(message_type),
        output_types=outputs,
        takes_context=ctx_param is not None,
        is_async=_is_async(func),
        request_type=request_type,
        matches_request=matcher_for(request_type) if response else None,
    )


def _is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` gives a coroutine (also for an object whose ``__call__`` is ``async def``)."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


def _ordered(
    specs: list[tuple[HandlerSpec, Callable[..., Any]]],
) -> list[tuple[HandlerSpec, Callable[..., Any]]]:
    """Specific handlers before catch-alls, otherwise in declaration order."""
    return sorted(specs, key=lambda pair: is_catch_all(pair[0].message_type))


class Executor:
    """A node of the workflow graph. Subclass it and mark methods with ``@handler``.

    Instances must not keep run state in attributes: in distributed mode every worker process has its own
    instance. Persist per-executor state with ``ctx.get_executor_state()`` / ``ctx.set_executor_state()``.

    ``retry`` (a ``RetryPolicy``) and ``timeout`` (seconds per attempt of one delivery) may be set as class
    attributes; left unset, the ``WorkflowBuilder``'s defaults apply; ``None`` means none (no retries, no
    time limit) whatever the builder says.
    """

    retry: RetryPolicy | None = INHERIT
    timeout: float | None = INHERIT

    def __init__(self, id: str | None = None) -> None:
        executor_id = id if id is not None else type(self).__name__
        if not isinstance(executor_id, str) or not executor_id:
            raise WorkflowValidationError(f"an executor id must be a non-empty string, not {executor_id!r}")
        self.id = executor_id
        self._handlers: list[tuple[HandlerSpec, Callable[..., Any]]] = []
        self._response_handlers: list[tuple[HandlerSpec, Callable[..., Any]]] = []
        self._discover()
        if not self._handlers and not self._response_handlers:
            raise WorkflowValidationError(f"executor {self.id!r} ({type(self).__name__}) has no @handler")
        self._route_cache: dict[type, tuple[HandlerSpec, Callable[..., Any]] | None] = {}

    def _discover(self) -> None:
        owner = type(self).__name__
        seen: set[str] = set()
        for klass in type(self).__mro__:
            for name, member in vars(klass).items():
                if name in seen or not callable(member):
                    continue
                seen.add(name)
                mark = getattr(member, _HANDLER_MARK, None)
                rmark = getattr(member, _RESPONSE_MARK, None)
                if mark is not None:
                    spec = _spec(member, owner, skip_self=True, response=False, output=mark["output"])
                    self._handlers.append((spec, getattr(self, name)))
                elif rmark is not None:
                    spec = _spec(member, owner, skip_self=True, response=True, output=rmark["output"])
                    self._response_handlers.append((spec, getattr(self, name)))
        self._handlers = _ordered(self._handlers)

    async def reset(self) -> None:
        """Release resources the executor holds (sessions, caches). Called by ``reset_for_new_run()``."""

    # -- routing --------------------------------------------------------------------------------------------

    @property
    def handler_specs(self) -> list[HandlerSpec]:
        return [spec for spec, _ in self._handlers]

    @property
    def response_handler_specs(self) -> list[HandlerSpec]:
        return [spec for spec, _ in self._response_handlers]

    def handler_for(self, message: Any) -> tuple[HandlerSpec, Callable[..., Any]] | None:
        """The handler that takes ``message`` (cached per type, except lists whose elements decide)."""
        kind = type(message)
        if kind is not list:
            cached = self._route_cache.get(kind, False)
            if cached is not False:
                return cached
        found = next((pair for pair in self._handlers if pair[0].matches(message)), None)
        if kind is not list:
            self._route_cache[kind] = found
        return found

    def can_handle(self, message: Any) -> bool:
        return self.handler_for(message) is not None

    def response_handler_for(
        self, request: Any, response: Any
    ) -> tuple[HandlerSpec, Callable[..., Any]] | None:
        for spec, bound in self._response_handlers:
            if spec.matches_request is not None and spec.matches_request(request) and spec.matches(response):
                return spec, bound
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


class FunctionExecutor(Executor):
    """An executor made of one function ``(message[, ctx])``, sync or async; its return value is ignored."""

    def __init__(
        self,
        func: Callable[..., Any],
        id: str | None = None,
        output: Any = None,
        retry: RetryPolicy | None = INHERIT,
        timeout: float | None = INHERIT,
    ) -> None:
        self._func = func
        self._output = output
        self.retry = retry
        self.timeout = timeout
        super().__init__(id if id is not None else func.__name__)

    def _discover(self) -> None:
        spec = _spec(self._func, "executor", skip_self=False, response=False, output=self._output)
        self._handlers = [(spec, self._func)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)


def executor(
    func: Callable[..., Any] | None = None,
    *,
    id: str | None = None,
    output: Any = None,
    retry: RetryPolicy | None = INHERIT,
    timeout: float | None = INHERIT,
) -> Any:
    """Turn a function into an executor: ``@executor`` or ``@executor(id="score", retry=..., timeout=5.0)``."""

    def wrap(f: Callable[..., Any]) -> FunctionExecutor:
        return FunctionExecutor(f, id=id, output=output, retry=retry, timeout=timeout)

    return wrap(func) if func is not None else wrap
