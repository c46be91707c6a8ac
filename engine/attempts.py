"""Delivering under a ``DeliveryPolicy``: attempts, backoff between them, and a deadline per attempt.

Each attempt starts from the view the delivery started with and records into an outcome of its own, so a failed
attempt leaves no trace: its sends, state writes, outputs, events and requests are dropped with its outcome, and
the view is rolled back (rebuilt from the committed state and the outcomes of the executor's earlier deliveries,
so nothing is saved before an attempt). Only the successful attempt's outcome (or the last failed one's, to report the failure)
reaches the barrier. Retries happen right here, inside the superstep, in this process or in the Celery worker
that runs the task: the barrier waits, and on a worker the task's claim keeps being refreshed meanwhile, so the
coordinator never mistakes a task that is backing off for a lost one.

Deadlines:

- an async handler is cancelled at its deadline by the superstep's watchdog (``engine/deadlines.py``: one
  timer, armed only while a timed handler is suspended), and the attempt fails with ``TimeoutError`` once its
  cancellation has run (its ``finally`` blocks included);
- a sync handler runs on a handler thread; at the deadline the attempt fails with ``TimeoutError`` at once. A
  thread cannot be stopped from outside, so the handler runs on to its end in the background, into a view and
  an outcome of its own that nobody looks at again (and it keeps its thread busy until then).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .context import MISSING
from .delivery import EventSink, batch_failed, call_on_thread, invoke, new_context
from .events import EventType, WorkflowEvent
from .handler_threads import default_threads
from .outcome import DeliveryOutcome
from .tracing import HANDLER, attributes
from .tracing import end as end_span

if TYPE_CHECKING:
    from collections.abc import Callable

    from .context import ExecutorView, WorkflowContext
    from .deadlines import AttemptClock
    from .dispatch import SuperstepWork
    from .executor import HandlerSpec
    from .handler_threads import HandlerThreads
    from .messages import Delivery
    from .retry import DeliveryPolicy
    from .tracing import Tracing


async def deliver_with_policy(
    policy: DeliveryPolicy,
    work: SuperstepWork,
    executor_id: str,
    index: int,
    delivery: Delivery,
    found: tuple[HandlerSpec, Callable[..., Any]],
    view: ExecutorView,
    outcomes: list[DeliveryOutcome],
    emit: EventSink,
    threads: HandlerThreads | None,
    first_error: Exception | None = None,
    *,
    trace: Tracing | None = None,
) -> None:
    """Deliver one message, retrying per ``policy.retry``; raises ``BatchFailed`` when attempts run out.

    ``first_error``: the error of a first attempt the caller already ran (the batch loop runs an async
    handler's first attempt inline, so success costs next to nothing). ``trace``: the batch's
    ``barrierflow.deliver`` span, under which each attempt gets a ``barrierflow.handler`` span.
    """
    spec, bound = found
    superstep = work.superstep
    retry, timeout = policy.retry, policy.timeout
    abandonable = timeout is not None and not spec.is_async  # may outlive its attempt: give it its own view
    attempt = 1
    while True:
        outcome = DeliveryOutcome(index, executor_id)
        if first_error is None:
            attempt_view = view.fork() if abandonable else view
            ctx = new_context(work, executor_id, delivery, outcome, attempt_view)
            emit(WorkflowEvent(EventType.EXECUTOR_INVOKED, None, executor_id, superstep))
            span = None if trace is None else _handler_span(trace, work, executor_id, attempt)
            try:
                if spec.is_async:
                    coro = invoke(spec, bound, delivery, ctx)
                    await (coro if timeout is None else within(coro, view, timeout, executor_id))
                else:
                    await _sync_attempt(spec, bound, delivery, ctx, timeout, executor_id, threads)
            except Exception as exc:
                error = exc
                if span is not None:
                    end_span(span, exc)
            except BaseException as exc:  # cancelled (a sibling failed, the lease was lost)
                if span is not None:
                    end_span(span, exc)
                raise
            else:
                if span is not None:
                    end_span(span)
                if attempt_view is not view:
                    view.adopt(attempt_view)
                outcomes.append(outcome)
                emit(WorkflowEvent(EventType.EXECUTOR_COMPLETED, None, executor_id, superstep))
                return
        else:
            error, first_error = first_error, None
        delay = retry.delay_after(attempt, error) if retry is not None else None
        if delay is None:
            outcomes.append(outcome)
            raise batch_failed(outcome, error, emit, superstep, attempt) from error
        earlier = [o for o in outcomes if o.executor_id == executor_id]  # its deliveries before this one
        view.rollback(work.executor_states.get(executor_id, MISSING), earlier)
        emit(
            WorkflowEvent(
                EventType.EXECUTOR_RETRY,
                str(error),
                executor_id,
                superstep,
                details={
                    "attempt": attempt,
                    "error_type": type(error).__name__,
                    "message": str(error),
                    "delay": delay,
                },
            )
        )
        await asyncio.sleep(delay)
        attempt += 1


def _handler_span(trace: Tracing, work: SuperstepWork, executor_id: str, attempt: int) -> Any:
    return trace.start(
        HANDLER,
        # the run's other ids are on its run, superstep and deliver spans: a handler span is the most frequent
        attributes(run_id=work.run_id, superstep=work.superstep, executor_id=executor_id, attempt=attempt),
    )


def timed_out(executor_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"{executor_id!r} did not finish within its timeout of {timeout:g} s")


async def within(coro: Any, clock: AttemptClock, timeout: float, executor_id: str) -> None:
    """Await an async handler's coroutine as an attempt that ``clock`` times (``engine/deadlines.py``)."""
    clock.start(timeout)
    try:
        await coro
    except asyncio.CancelledError:
        if not clock.timed_out():
            raise
        raise timed_out(executor_id, timeout) from None
    finally:
        clock.deadline = None


async def _sync_attempt(
    spec: HandlerSpec,
    bound: Callable[..., Any],
    delivery: Delivery,
    ctx: WorkflowContext,
    timeout: float | None,
    executor_id: str,
    threads: HandlerThreads | None,
) -> None:
    loop = asyncio.get_running_loop()
    running = loop.run_in_executor(
        threads or default_threads(), call_on_thread, spec, bound, delivery, ctx, loop
    )
    if timeout is None:
        await running
        return
    try:
        done, _ = await asyncio.wait((running,), timeout=timeout)
    except BaseException:
        running.cancel()
        raise
    if not done:
        running.cancel()  # stop waiting; the thread runs on into its own view and outcome
        raise timed_out(executor_id, timeout)
    running.result()
