"""One delivery to one handler: finding the handler, calling it, and recording its failure.

Shared by the batch loop (``engine/execution.py``) and the retry/timeout path (``engine/attempts.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .context import ExecutorView, WorkflowContext
from .events import EventType, WorkflowEvent
from .outcome import DeliveryOutcome, FailureInfo

if TYPE_CHECKING:
    from .dispatch import SuperstepWork
    from .executor import Executor, HandlerSpec
    from .messages import Delivery

EventSink = Callable[[WorkflowEvent], None]
Found = tuple["HandlerSpec", Callable[..., Any]] | None


class BatchFailed(Exception):
    """A handler raised; carries its ``FailureInfo`` and delivery index (the original is ``__cause__``)."""

    def __init__(self, info: FailureInfo, index: int) -> None:
        super().__init__(f"{info.executor_id}: {info.error_type}: {info.message}")
        self.info = info
        self.index = index


def handler_of(executor: Executor, delivery: Delivery) -> Found:
    """The handler for a delivery: a response handler for an answer to a request, else by message type."""
    request = delivery.request
    if request is None:
        return executor.handler_for(delivery.message)
    return executor.response_handler_for(request.data, delivery.message)


def invoke(spec: HandlerSpec, bound: Callable[..., Any], delivery: Delivery, ctx: WorkflowContext) -> Any:
    """Call the handler: a coroutine for an async handler, the return value (ignored) of a sync one.

    A response handler gets the original request's data, or the ``PendingRequest`` itself when its spec asks
    for it (``passes_request``: a sub-workflow needs the request id to find the child execution).
    """
    request = delivery.request
    if request is None:
        return bound(delivery.message, ctx) if spec.takes_context else bound(delivery.message)
    original = request if spec.passes_request else request.data
    if spec.takes_context:
        return bound(original, delivery.message, ctx)
    return bound(original, delivery.message)


def call_on_thread(
    spec: HandlerSpec,
    bound: Callable[..., Any],
    delivery: Delivery,
    ctx: WorkflowContext,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """On a handler thread: call a sync handler; an awaitable it returns is awaited on the loop."""
    result = invoke(spec, bound, delivery, ctx)
    if result is not None and inspect.isawaitable(result):
        asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def new_context(
    work: SuperstepWork, executor_id: str, delivery: Delivery, outcome: DeliveryOutcome, view: ExecutorView
) -> WorkflowContext:
    return WorkflowContext(
        executor_id,
        work.run_id,
        work.instance_id,
        work.superstep,
        delivery.source_ids,
        outcome,
        view,
    )


def no_handler(executor_id: str, delivery: Delivery) -> str:
    return f"{executor_id} has no handler for {type(delivery.message).__name__}"


def batch_failed(
    outcome: DeliveryOutcome, exc: Exception, emit: EventSink, superstep: int, attempts: int = 1
) -> BatchFailed:
    """Record a handler's exception in its outcome, emit ``executor_failed``, and make the ``BatchFailed``."""
    executor_id = outcome.executor_id
    info = FailureInfo(
        executor_id, type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)), attempts
    )
    outcome.error = info
    details: dict[str, Any] = {"error_type": info.error_type}
    if attempts > 1:
        details["attempts"] = attempts
    emit(WorkflowEvent(EventType.EXECUTOR_FAILED, info.message, executor_id, superstep, details=details))
    failed = BatchFailed(info, outcome.index)
    failed.__cause__ = exc
    return failed
