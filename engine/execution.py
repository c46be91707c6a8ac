"""Running one executor's deliveries of a superstep: the code a local dispatcher and a Celery worker share.

An executor handles its deliveries one at a time, in delivery order. Async handlers run on the event loop.
Sync handlers run on a handler thread (``engine/handler_threads.py`` says why): a stretch of consecutive
deliveries whose handlers are sync goes to a thread in one hop, and the thread reports their live events back
to the loop as they happen.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from time import monotonic
from typing import TYPE_CHECKING

from .attempts import deliver_with_policy, timed_out
from .context import ExecutorView, WorkflowContext
from .delivery import (
    BatchFailed,
    EventSink,
    batch_failed,
    call_on_thread,
    handler_of,
    invoke,
    new_context,
    no_handler,
)
from .events import EventType, WorkflowEvent
from .handler_threads import default_threads
from .outcome import DeliveryOutcome
from .retry import DeliveryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .dispatch import ExecutorBatch, SuperstepWork
    from .executor import Executor, HandlerSpec
    from .handler_threads import HandlerThreads
    from .messages import Delivery
    from .tracing import Tracing

#: The policy of a traced delivery that has none: one attempt, no deadline (what the fast paths do).
UNLIMITED = DeliveryPolicy(retry=None, timeout=None)


async def run_executor_batch(
    executors: Mapping[str, Executor],
    work: SuperstepWork,
    batch: ExecutorBatch,
    view: ExecutorView,
    outcomes: list[DeliveryOutcome],
    emit: EventSink,
    threads: HandlerThreads | None = None,
    trace: Tracing | None = None,
) -> None:
    """Deliver ``batch`` one message at a time, appending each delivery's outcome to ``outcomes``.

    Raises ``BatchFailed`` on the first handler exception (the outcome of the failed delivery, with ``error``
    set, is appended first so a remote caller can ship it back). Sync handlers run on ``threads`` (default:
    the process-wide pool of ``engine/handler_threads.py``). ``view`` is the executor's view of the state
    (``ExecutorView(work.shared_state, its committed executor state)``), made by the dispatcher because it is
    also the batch's ``AttemptClock``: the dispatcher watches it if the batch suspends (``engine/deadlines.py``).
    With ``trace`` (tracing is on: the batch's ``barrierflow.deliver`` span) every delivery takes the policy
    path, which makes one ``barrierflow.handler`` span per attempt; without it the fast paths below run.
    """
    executor_id = batch.executor_id
    executor = executors[executor_id]
    superstep, run_id, instance_id = work.superstep, work.run_id, work.instance_id
    policy = work.policies.get(executor_id) if work.policies else None
    if trace is not None and policy is None:
        policy = UNLIMITED
    timeout = policy.timeout if policy is not None else None
    deliveries = batch.deliveries
    position, count = 0, len(deliveries)
    while position < count:
        index, delivery = deliveries[position]
        request = delivery.request  # the hot path: handler_of() and invoke(), inlined
        if request is None:
            found = executor.handler_for(delivery.message)
        else:
            found = executor.response_handler_for(request.data, delivery.message)
        if found is not None and (trace is not None or not found[0].is_async):
            if policy is None:
                position = await _run_sync_stretch(
                    executor, work, batch, position, view, outcomes, emit, threads
                )
            else:  # under a policy each delivery is an attempt of its own, on its own hop
                position += 1
                await deliver_with_policy(
                    policy,
                    work,
                    executor_id,
                    index,
                    delivery,
                    found,
                    view,
                    outcomes,
                    emit,
                    threads,
                    trace=trace,
                )
            continue
        position += 1
        outcome = DeliveryOutcome(index, executor_id)
        outcomes.append(outcome)
        if found is None:
            outcome.dropped = no_handler(executor_id, delivery)
            continue
        spec, bound = found
        # the first attempt of an async handler runs here even under a policy: what fails goes to
        # deliver_with_policy, which retries; success costs nothing more but, with a timeout, a deadline
        ctx = WorkflowContext(executor_id, run_id, instance_id, superstep, delivery.source_ids, outcome, view)
        emit(WorkflowEvent(EventType.EXECUTOR_INVOKED, None, executor_id, superstep))
        try:
            if request is None:
                coro = bound(delivery.message, ctx) if spec.takes_context else bound(delivery.message)
            else:
                coro = invoke(spec, bound, delivery, ctx)
            if timeout is None:
                await coro
            else:  # within(), inlined: the hot path under a timeout; the view is the batch's clock
                deadline = view.deadline = monotonic() + timeout  # view.start(timeout), inlined
                if view.watchdog is not None and deadline < view.watchdog.when:
                    view.watchdog.arm(deadline)
                try:
                    await coro
                except asyncio.CancelledError:
                    if not view.timed_out():
                        raise
                    raise timed_out(executor_id, timeout) from None
                finally:
                    view.deadline = None
        except Exception as exc:
            if policy is None:
                raise batch_failed(outcome, exc, emit, superstep) from exc
            outcomes.remove(outcome)
            await deliver_with_policy(
                policy,
                work,
                executor_id,
                index,
                delivery,
                found,
                view,
                outcomes,
                emit,
                threads,
                exc,
            )
            continue
        emit(WorkflowEvent(EventType.EXECUTOR_COMPLETED, None, executor_id, superstep))


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
    stretch: list[tuple[int, Delivery, tuple[HandlerSpec, Callable[..., Any]]]] = []
    position = start
    while position < len(deliveries):  # up to the next async handler, or a delivery no handler takes
        index, delivery = deliveries[position]
        found = handler_of(executor, delivery)
        if found is None or found[0].is_async:
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
    stretch: list[tuple[int, Delivery, tuple[HandlerSpec, Callable[..., Any]]]],
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
    for index, delivery, (spec, bound) in stretch:
        if stop.is_set():
            return None
        outcome = DeliveryOutcome(index, executor_id)
        outcomes.append(outcome)
        emit(WorkflowEvent(EventType.EXECUTOR_INVOKED, None, executor_id, superstep))
        try:
            call_on_thread(
                spec, bound, delivery, new_context(work, executor_id, delivery, outcome, view), loop
            )
        except Exception as exc:
            return batch_failed(outcome, exc, emit, superstep)
        emit(WorkflowEvent(EventType.EXECUTOR_COMPLETED, None, executor_id, superstep))
    return None
