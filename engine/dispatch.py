"""The dispatcher seam: who runs one superstep's deliveries.

The runner plans a superstep as ``ExecutorBatch``es (all deliveries of one executor, in delivery order, so an
executor handles them one at a time) and hands them to a dispatcher. ``LocalDispatcher`` runs them in this
process; ``workers.CeleryDispatcher`` ships them to Celery workers. Both return the same ``SuperstepResult``;
the runner alone commits it at the barrier.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .context import MISSING, ExecutorView
from .deadlines import Watchdog
from .delivery import BatchFailed
from .eager import start_eagerly
from .events import WorkflowEvent
from .execution import run_executor_batch
from .executor import Executor
from .handler_threads import HandlerThreads, default_threads
from .messages import Delivery
from .outcome import DeliveryOutcome, FailureInfo
from .retry import DeliveryPolicy
from .tracing import DELIVER, Tracing, attributes
from .tracing import end as end_span

EventSink = Callable[[WorkflowEvent], None]


@dataclass(slots=True)
class ExecutorBatch:
    """The deliveries of one executor in one superstep, as ``(index in the superstep order, delivery)``."""

    executor_id: str
    deliveries: list[tuple[int, Delivery]]


@dataclass(slots=True)
class SuperstepWork:
    """Everything needed to run one superstep anywhere: the batches and the state at the last barrier."""

    instance_id: str
    run_id: str
    superstep: int
    workflow_name: str
    graph_signature: str
    batches: list[ExecutorBatch]
    shared_state: Mapping[str, Any]
    executor_states: Mapping[str, Any]
    lease_token: str = ""
    epoch: int = 0
    #: retries and timeouts by executor id (``Graph.policies`` of the process that runs the work)
    policies: Mapping[str, DeliveryPolicy] = field(default_factory=dict)
    #: the superstep span's children (``engine/tracing.py``), ``None`` when tracing is off
    trace: Tracing | None = None


@dataclass(slots=True)
class SuperstepResult:
    """Outcomes of the deliveries that ran, and the failure that stopped the superstep, if any.

    ``exception`` is the original exception when the handler ran in this process (it becomes the
    ``__cause__`` of ``ExecutorFailedError``); remote failures carry only ``failure``.
    """

    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    failure: FailureInfo | None = None
    exception: BaseException | None = None


class Dispatcher(ABC):
    """Runs the deliveries of one superstep and returns their outcomes (it never commits anything)."""

    @abstractmethod
    async def run_superstep(
        self, executors: Mapping[str, Executor], work: SuperstepWork, emit: EventSink
    ) -> SuperstepResult:
        """Run ``work``; report ``executor_invoked/completed/failed`` through ``emit`` as they happen."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most dispatchers hold nothing
        """Release resources (connections); the default holds none."""


class LocalDispatcher(Dispatcher):
    """Runs every executor's batch in this process, executors concurrently, each one's deliveries in order.

    Batches start eagerly (``engine.eager``): one that never suspends costs no Task. On the first failure the
    other batches are cancelled, and the runner discards every outcome of the superstep.

    Sync handlers run on handler threads (``engine/handler_threads.py``): ``sync_threads`` bounds them for
    this dispatcher; by default all dispatchers of the process share one pool of ``BARRIERFLOW_SYNC_THREADS``
    threads (default ``min(32, cpu count + 4)``).
    """

    def __init__(self, *, sync_threads: int | None = None) -> None:
        self._threads = HandlerThreads(sync_threads) if sync_threads is not None else None

    @property
    def threads(self) -> HandlerThreads:
        """The pool this dispatcher's sync handlers run on."""
        return self._threads if self._threads is not None else default_threads()

    async def run_superstep(
        self, executors: Mapping[str, Executor], work: SuperstepWork, emit: EventSink
    ) -> SuperstepResult:
        result = SuperstepResult()
        outcomes = result.outcomes
        running: list[asyncio.Task[None]] = []
        failures: list[BatchFailed] = []
        threads = self._threads  # None: the process-wide pool, looked up only if a sync handler runs
        shared, states, policies = work.shared_state, work.executor_states, work.policies
        watchdog: Watchdog | None = None  # made when a batch with a timeout suspends
        trace = work.trace  # None: tracing is off
        try:
            for batch in work.batches:
                executor_id = batch.executor_id
                view = ExecutorView(shared, states.get(executor_id, MISSING))
                if trace is not None:
                    task = _traced_batch(
                        executors, work, batch, view, outcomes, emit, threads, trace, failures
                    )
                    if task is _FAILED:
                        break
                else:
                    try:
                        task, _ = start_eagerly(
                            run_executor_batch(executors, work, batch, view, outcomes, emit, threads)
                        )
                    except BatchFailed as failed:
                        failures.append(failed)
                        break
                if task is not None:
                    running.append(task)
                    policy = policies.get(executor_id) if policies else None
                    if policy is not None and policy.timeout is not None:  # its attempts need a watchdog
                        watchdog = watchdog or Watchdog()
                        watchdog.watch(view, task)
            while running and not failures:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
                running = [task for task in running if task not in done]
                for task in done:
                    error = task.exception()
                    if isinstance(error, BatchFailed):
                        failures.append(error)
                    elif error is not None:
                        raise error
        finally:
            if watchdog is not None:
                watchdog.close()
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failures:
            first = min(failures, key=lambda failed: failed.index)
            result.failure, result.exception = first.info, first.__cause__
        return result


_FAILED: Any = object()


def _traced_batch(
    executors: Mapping[str, Executor],
    work: SuperstepWork,
    batch: ExecutorBatch,
    view: ExecutorView,
    outcomes: list[DeliveryOutcome],
    emit: EventSink,
    threads: HandlerThreads | None,
    trace: Tracing,
    failures: list[BatchFailed],
) -> Any:
    """``start_eagerly(run_executor_batch(...))`` under a ``barrierflow.deliver`` span, ended with the batch.

    Returns the batch's Task, ``None`` if it finished at once, ``_FAILED`` if it failed at once (its
    ``BatchFailed`` then goes to ``failures``).
    """
    span = trace.start(
        DELIVER,
        attributes(
            instance_id=work.instance_id,
            run_id=work.run_id,
            superstep=work.superstep,
            executor_id=batch.executor_id,
            deliveries=len(batch.deliveries),
        ),
    )
    try:
        task, _ = start_eagerly(
            run_executor_batch(executors, work, batch, view, outcomes, emit, threads, trace.under(span))
        )
    except BatchFailed as failed:
        end_span(span, failed.__cause__ or failed)
        failures.append(failed)
        return _FAILED
    if task is None:
        end_span(span)
    else:
        task.add_done_callback(lambda done: end_span(span, _error_of(done)))
    return task


def _error_of(task: asyncio.Task[None]) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    error = task.exception()
    return error.__cause__ or error if isinstance(error, BatchFailed) else error
