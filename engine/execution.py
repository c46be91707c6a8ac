"""Running one executor's deliveries of a superstep: the code a local dispatcher and a Celery worker share.

An executor handles its deliveries one at a time, in delivery order. Async handlers run on the event loop.
Sync handlers run on a handler thread (``engine/handler_threads.py`` says why): a stretch of consecutive
deliveries whose handlers are sync goes to a thread in one hop, and the thread reports their live events back
to the loop as they happen.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .context import MISSING, ExecutorView, WorkflowContext
from .events import EventType, WorkflowEvent
from .handler_threads import default_threads
from .outcome import DeliveryOutcome, FailureInfo

if TYPE_CHECKING:
    from .dispatch import ExecutorBatch, SuperstepWork
    from .executor import Executor, HandlerSpec
    from .handler_threads import HandlerThreads
    from .messages import Delivery

EventSink = Callable[[WorkflowEvent], None]
Found = tuple["HandlerSpec", Callable[..., Any]] | None


class BatchFailed(Exception):
    """A handler raised; carries its ``FailureInfo`` and delivery index (the original is ``__cause__``)."""

    def __init__(self, info: FailureInfo, index: int) -> None:
        super().__init__(f"{info.executor_id}: {info.error_type}: {info.message}")
        self.info = info
        self.index = index


async def run_executor_batch(
    executors: Mapping[str, Executor],
    work: SuperstepWork,
    batch: ExecutorBatch,
    outcomes: list[DeliveryOutcome],
    emit: EventSink,
    threads: HandlerThreads | None = None,
) -> None:
    """Deliver ``batch`` one message at a time, appending each delivery's outcome to ``outcomes``.

    Raises ``BatchFailed`` on the first handler exception (the outcome of the failed delivery, with ``error``
    set, is appended first so a remote caller can ship it back). Sync handlers run on ``threads`` (default:
    the process-wide pool of ``engine/handler_threads.py``).
    """
    executor_id = batch.executor_id
    executor = executors[executor_id]
    superstep, run_id, instance_id = work.superstep, work.run_id, work.instance_id
    view = ExecutorView(work.shared_state, work.executor_states.get(executor_id, MISSING))
    deliveries = batch.deliveries
    position, count = 0, len(deliveries)
    while position < count:
        index, delivery = deliveries[position]
        request = delivery.request  # the hot path: handler_of() and invoke(), inlined
        if request is None:
            found = executor.handler_for(delivery.message)
        else:
            found = executor.response_handler_for(request.data, delivery.message)
        if found is not None and not found[0].is_async:
            position = await _run_sync_stretch(executor, work, batch, position, view, outcomes, emit, threads)
            continue
        position += 1
        outcome = DeliveryOutcome(index, executor_id)
        outcomes.append(outcome)
        if found is None:
            outcome.dropped = _no_handler(executor_id, delivery)
            continue
        spec, bound = found
        ctx = WorkflowContext(
            executor_id, run_id, instance_id, superstep, list(delivery.source_ids), outcome, view
        )
        emit(WorkflowEvent(EventType.EXECUTOR_INVOKED, None, executor_id, superstep))
        try:
            if request is None:
                await (bound(delivery.message, ctx) if spec.takes_context else bound(delivery.message))
            else:
                await invoke(spec, bound, delivery, ctx)
        except Exception as exc:
            raise batch_failed(outcome, exc, emit, superstep) from exc
        emit(WorkflowEvent(EventType.EXECUTOR_COMPLETED, None, executor_id, superstep))


def handler_of(executor: Executor, delivery: Delivery) -> Found:
    """The handler for a delivery: a response handler for an answer to a request, else by message type."""
    request = delivery.request
    if request is None:
        return executor.handler_for(delivery.message)
    return executor.response_handler_for(request.data, delivery.message)


def invoke(spec: HandlerSpec, bound: Callable[..., Any], delivery: Delivery, ctx: WorkflowContext) -> Any:
    """Call the handler: a coroutine for an async handler, the return value (ignored) of a sync one."""
    request = delivery.request
    if request is None:
        return bound(delivery.message, ctx) if spec.takes_context else bound(delivery.message)
    if spec.takes_context:
        return bound(request.data, delivery.message, ctx)
    return bound(request.data, delivery.message)


def _context(
    work: SuperstepWork, executor_id: str, delivery: Delivery, outcome: DeliveryOutcome, view: ExecutorView
) -> WorkflowContext:
    return WorkflowContext(
        executor_id,
        work.run_id,
        work.instance_id,
        work.superstep,
        list(delivery.source_ids),
        outcome,
        view,
    )


def _no_handler(executor_id: str, delivery: Delivery) -> str:
    return f"{executor_id} has no handler for {type(delivery.message).__name__}"


def batch_failed(outcome: DeliveryOutcome, exc: Exception, emit: EventSink, superstep: int) -> BatchFailed:
    """Record a handler's exception in its outcome, emit ``executor_failed``, and make the ``BatchFailed``."""
    executor_id = outcome.executor_id
    info = FailureInfo(executor_id, type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))
    outcome.error = info
    emit(
        WorkflowEvent(
            EventType.EXECUTOR_FAILED,
            info.message,
            executor_id=executor_id,
            superstep=superstep,
            details={"error_type": info.error_type},
        )
    )
    return BatchFailed(info, outcome.index)


async def _run_sync_stretch(
    executor: Executor,
    work: SuperstepWork,
    batch: ExecutorBatch,
    start: int,
    view: ExecutorView,
    outcomes: list[DeliveryOutcome],
    emit: EventSink,
    threads: HandlerThreads | None,
) -> int:
    """Run the deliveries from ``start`` up to the next async handler on one thread; returns where it stopped.

    If the wait is cancelled (a sibling failed, the lease was lost, Ctrl-C), the thread stops after the
    handler it is in; nothing it did afterwards is looked at.
    """
    deliveries = batch.deliveries
    stretch: list[tuple[int, Delivery, Found]] = []
    position = start
    while position < len(deliveries):
        index, delivery = deliveries[position]
        found = handler_of(executor, delivery)
        if found is not None and found[0].is_async:
            break
        stretch.append((index, delivery, found))
        position += 1
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def emit_from_thread(event: WorkflowEvent) -> None:
        if not stop.is_set():
            loop.call_soon_threadsafe(emit, event)  # in order, before the stretch's own completion

    try:
        failed = await loop.run_in_executor(
            threads or default_threads(),
            _deliver_on_thread,
            stretch,
            work,
            batch.executor_id,
            view,
            outcomes,
            emit_from_thread,
            stop,
            loop,
        )
    finally:
        stop.set()
    if failed is not None:
        raise failed
    return position


def _deliver_on_thread(
    stretch: list[tuple[int, Delivery, Found]],
    work: SuperstepWork,
    executor_id: str,
    view: ExecutorView,
    outcomes: list[DeliveryOutcome],
    emit: EventSink,
    stop: threading.Event,
    loop: asyncio.AbstractEventLoop,
) -> BatchFailed | None:
    """On a handler thread: deliver a stretch of sync deliveries in order. The first failure ends it, and so
    does ``stop`` (nobody waits for the rest)."""
    superstep = work.superstep
    for index, delivery, found in stretch:
        if stop.is_set():
            return None
        outcome = DeliveryOutcome(index, executor_id)
        outcomes.append(outcome)
        if found is None:
            outcome.dropped = _no_handler(executor_id, delivery)
            continue
        spec, bound = found
        ctx = _context(work, executor_id, delivery, outcome, view)
        emit(WorkflowEvent(EventType.EXECUTOR_INVOKED, None, executor_id, superstep))
        try:
            result = invoke(spec, bound, delivery, ctx)
            if result is not None and inspect.isawaitable(
                result
            ):  # a sync function that returned a coroutine
                asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()
        except Exception as exc:
            failed = batch_failed(outcome, exc, emit, superstep)
            failed.__cause__ = exc
            return failed
        emit(WorkflowEvent(EventType.EXECUTOR_COMPLETED, None, executor_id, superstep))
    return None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
