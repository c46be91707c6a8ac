"""The superstep loop: plan, deliver, route, commit, emit. One screen, one place.

Each superstep delivers everything queued (BSP): handlers' effects are collected, not applied; at the barrier
they are merged in delivery order, routed along the edges, written as one checkpoint, and only then are the
superstep's outputs and requests emitted. A failure anywhere before the write leaves the instance exactly as
at the last barrier, with the superstep's inputs still queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from . import codec
from .checkpoint import new_checkpoint_id
from .dispatch import Dispatcher, ExecutorBatch, SuperstepResult, SuperstepWork
from .eager import start_eagerly
from .errors import ConvergenceError, ExecutorFailedError, SerializationError
from .events import EventType, WorkflowEvent
from .graph import Graph
from .instance_state import Changes, Identity, InstanceState, commit
from .messages import Delivery, PendingRequest
from .outcome import DeliveryOutcome, unencodable_effect
from .routing import route
from .run_control import RunControl
from .store import Store, lease_lost_error
from .tracing import SUPERSTEP, Tracing, attributes
from .tracing import end as end_span


def plan(deliveries: list[Delivery]) -> list[ExecutorBatch]:
    """Group a superstep's deliveries by executor, keeping the total order inside each batch."""
    batches: dict[str, ExecutorBatch] = {}
    for index, delivery in enumerate(deliveries):
        batch = batches.get(delivery.target_id)
        if batch is None:
            batches[delivery.target_id] = batch = ExecutorBatch(delivery.target_id, [])
        batch.deliveries.append((index, delivery))
    return list(batches.values())


def barrier_changes(
    outcomes: list[DeliveryOutcome], pending_requests: Mapping[str, PendingRequest]
) -> Changes:
    """Merge the outcomes' writes in delivery order (later wins) and add new requests to ``pending_requests``.

    ``Changes.pending_requests`` stays ``None`` when no request was made (the pending set is unchanged).
    """
    changes = Changes()
    shared = changes.shared
    pending = None
    for outcome in outcomes:
        for key, value, deleted in outcome.state_writes:
            if deleted:
                shared.delete(key)
            else:
                shared.set(key, value)
        if outcome.executor_state:
            changes.executor_sets[outcome.executor_id] = outcome.executor_state[0]
        if outcome.requests:
            if pending is None:
                pending = dict(pending_requests)
            for request in outcome.requests:
                pending[request.request_id] = request
    changes.pending_requests = pending
    return changes


class SuperstepRunner:
    """Drives supersteps of one run over an ``InstanceState`` and yields the events as an async iterator."""

    def __init__(
        self,
        graph: Graph,
        store: Store,
        dispatcher: Dispatcher,
        state: InstanceState,
        who: Identity,
        lease_lost: asyncio.Future[None] | None = None,
        control: RunControl | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.graph = graph
        self.store = store
        self.dispatcher = dispatcher
        self.state = state
        self.who = who
        #: done once the lease is known lost: running handlers are cancelled then, not at the barrier
        self.lease_lost = lease_lost
        self.control = control
        #: spans of this run go under ``tracing`` (``None``: tracing is off, no span is made)
        self.tracing = tracing
        self._step: Tracing | None = None  # the superstep span's children, while it is open
        self._step_span: Any = None

    def run(self, max_supersteps: int) -> AsyncIterator[WorkflowEvent]:
        """Deliver, route, commit, emit — until nothing is queued or ``max_supersteps`` were run."""
        # untraced, the loop's own generator: no extra hop per event
        return self._run(max_supersteps) if self.tracing is None else self._traced(max_supersteps)

    async def _traced(self, max_supersteps: int) -> AsyncIterator[WorkflowEvent]:
        """``_run``, ending the open superstep span with the error (or the close) that stops it."""
        try:
            async for event in self._run(max_supersteps):
                yield event
        except BaseException as exc:
            self._end_step(None if isinstance(exc, GeneratorExit) else exc)
            raise

    async def _run(self, max_supersteps: int) -> AsyncIterator[WorkflowEvent]:
        state, control = self.state, self.control
        for _ in range(max_supersteps):
            if not state.messages:
                return
            if control is not None and control.stop is not None:  # the host stops the run at this barrier
                raise control.stop
            superstep = state.superstep + 1
            if self.tracing is not None:
                self._start_step(superstep)
            yield WorkflowEvent(EventType.SUPERSTEP_STARTED, superstep=superstep)
            live: list[WorkflowEvent] = []
            wake = asyncio.Event()
            delivering, result = start_eagerly(self._deliver(superstep, live, wake))  # nothing applied yet
            if delivering is None:  # no handler suspended: everything happened already
                for event in live:
                    yield event
            else:  # handlers are awaiting: stream their events as they happen
                async for event in _while_running(delivering, live, wake, self.lease_lost):
                    yield event
                if not delivering.done():  # the lease was lost: nothing of this superstep can commit
                    delivering.cancel()
                    await asyncio.gather(delivering, return_exceptions=True)
                    raise lease_lost_error(
                        self.who.lease, f"superstep {superstep} (its handlers were cancelled)"
                    )
                result = delivering.result()
            failure = result.failure
            if failure is not None:
                error = ExecutorFailedError(
                    failure.executor_id,
                    failure.error_type,
                    failure.message,
                    failure.traceback,
                    failure.attempts,
                )
                raise error from result.exception
            events = await self._commit(superstep, result.outcomes)  # the barrier
            if self._step is not None:
                self._end_step(None, deliveries=len(result.outcomes), events=len(events))
            for event in events:
                yield event
        if state.messages:
            raise ConvergenceError(
                f"workflow {self.graph.name!r} reached max_supersteps={max_supersteps} with "
                f"{len(state.messages)} message(s) still queued; run() continues it"
            )

    async def _deliver(
        self, superstep: int, live: list[WorkflowEvent], wake: asyncio.Event
    ) -> SuperstepResult:
        """Run every queued delivery through the dispatcher; outcomes sorted into delivery order.

        Executor events go to ``live`` as they happen (``wake`` tells a waiting stream).
        """

        def emit(event: WorkflowEvent) -> None:
            live.append(event)
            wake.set()

        state, who = self.state, self.who
        batches = plan(state.messages)
        work = SuperstepWork(
            instance_id=who.instance_id,
            run_id=who.run_id,
            superstep=superstep,
            workflow_name=self.graph.name,
            graph_signature=self.graph.signature,
            batches=batches,
            shared_state=state.shared_state,
            executor_states=state.executor_states,
            lease_token=who.lease.token,
            epoch=who.lease.epoch,
            policies=self.graph.policies,
            trace=self._step,
        )
        result = await self.dispatcher.run_superstep(self.graph.executors, work, emit)
        if len(batches) > 1:
            result.outcomes.sort(key=_by_index)
        return result

    async def _commit(self, superstep: int, outcomes: list[DeliveryOutcome]) -> list[WorkflowEvent]:
        """The barrier: merge writes in delivery order, route, write the checkpoint, then emit its events."""
        state, who = self.state, self.who
        routed = await route(self.graph, outcomes, state.fan_in_buffers)
        changes = barrier_changes(outcomes, state.pending_requests)
        changes.superstep = superstep
        changes.messages = routed.deliveries
        changes.fan_in_buffers = routed.fan_in_buffers
        events = [event for outcome in outcomes for event in outcome.emitted]
        if events:
            check_encodable(events, outcomes)
        if who.lease.lost:
            raise lease_lost_error(who.lease, f"before committing superstep {superstep}")
        # the events name the checkpoint and go to the store with it (a journaling store commits them together)
        checkpoint_id = changes.checkpoint_id = new_checkpoint_id(who.instance_id)
        dropped = routed.dropped + [o.dropped for o in outcomes if o.dropped]
        if dropped:
            details = {"dropped": len(dropped), "reasons": dropped}
            events.append(
                WorkflowEvent(
                    EventType.WARNING,
                    f"{len(dropped)} message(s) dropped",
                    superstep=superstep,
                    details=details,
                )
            )
        events.append(WorkflowEvent(EventType.CHECKPOINT_CREATED, checkpoint_id, superstep=superstep))
        events.append(WorkflowEvent(EventType.SUPERSTEP_COMPLETED, superstep=superstep))
        changes.events = events
        await commit(self.store, state, changes, who, self._step)
        return events

    def _start_step(self, superstep: int) -> None:
        assert self.tracing is not None
        who = self.who
        span = self.tracing.start(
            SUPERSTEP,
            attributes(
                instance_id=who.instance_id,
                run_id=who.run_id,
                workflow=who.workflow_name,
                superstep=superstep,
            ),
        )
        self._step = self.tracing.under(span)
        self._step_span = span

    def _end_step(self, error: BaseException | None, **counts: int) -> None:
        """End the open superstep span (if any): with the superstep's counts, or the error that ended it."""
        if self._step is None:
            return
        span, self._step = self._step_span, None
        for name, count in counts.items():
            span.set_attribute(f"barrierflow.{name}", count)
        end_span(span, error)


async def _while_running(
    task: asyncio.Task[SuperstepResult],
    live: list[WorkflowEvent],
    wake: asyncio.Event,
    stop: asyncio.Future[None] | None,
) -> AsyncIterator[WorkflowEvent]:
    """Yield ``live`` events as they arrive until ``task`` is done or ``stop`` is (then ``task`` still runs).

    ``task`` is cancelled if the consumer goes away.
    """
    seen = 0
    try:
        while True:
            for event in live[seen:]:
                yield event
            seen = len(live)
            if task.done() or (stop is not None and stop.done()):
                return
            wake.clear()
            waiter = asyncio.ensure_future(wake.wait())
            try:
                waited = (task, waiter) if stop is None else (task, waiter, stop)
                await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
    finally:
        if not task.done() and (stop is None or not stop.done()):
            task.cancel()


def check_encodable(events: list[WorkflowEvent], outcomes: list[DeliveryOutcome]) -> None:
    """Outputs and events must survive encoding in every mode, as they must on a worker: check them here.

    One ``encode`` of the superstep's events (no copy is kept). Without it an unencodable output would succeed
    in process and fail only when the same workflow runs on workers.
    """
    try:
        codec.encode(events)
    except SerializationError as exc:
        raise (unencodable_effect(outcomes) or exc) from exc


def _by_index(outcome: DeliveryOutcome) -> Any:
    return outcome.index
