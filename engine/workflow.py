"""``Workflow``: a handle on one instance — its runs, checkpoints, restore and reset.

An instance's state lives in its store; this object caches the latest checkpoint it knows and reloads when the
store's latest differs (another handle or process moved it on). Lifecycle: ``IDLE -> RESERVED`` synchronously
when ``run()``/``stream()`` is called, ``RUNNING`` once the store lease is held, ``IDLE`` when released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from .checkpoint import new_checkpoint_id
from .dispatch import Dispatcher
from .eager import start_eagerly
from .errors import (
    GraphSignatureMismatchError,
    RunCancelledError,
    UnknownRequestError,
    WorkflowError,
    WorkflowNotIdleError,
    WorkflowRunInProgressError,
)
from .events import EventType, Lifecycle, RunResult, RunState, WorkflowEvent, request_info_event
from .graph import Graph, mermaid
from .instance_state import Changes, Identity, InstanceState, commit
from .log_context import LOG_CONTEXT
from .messages import INPUT_SOURCE, Delivery, PendingRequest
from .run_control import RunControl
from .run_session import RunCall, RunSession, WorkflowStream, outputs_of
from .runner import SuperstepRunner
from .store import Lease, Store, new_token, owner_info
from .tracing import LEASE_ACQUIRE, RUN, Tracing, attributes, links_to, trace_id, tracer
from .tracing import end as end_span

logger = logging.getLogger("barrierflow")


class Workflow:
    """A runnable workflow instance. Build it with ``WorkflowBuilder(...).build()``."""

    def __init__(self, graph: Graph, *, instance_id: str, store: Store, dispatcher: Dispatcher) -> None:
        self._graph = graph
        self.instance_id = instance_id
        self.store = store
        self.dispatcher = dispatcher
        self._token: str | None = None
        self._lifecycle = Lifecycle.IDLE
        self._state: InstanceState | None = None
        self._failed = False

    # -- introspection -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def graph_signature(self) -> str:
        return self._graph.signature

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def executors(self) -> Mapping[str, Any]:
        return self._graph.executors

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle

    @property
    def status(self) -> RunState:
        """``IN_PROGRESS`` while reserved; ``FAILED`` after a failed run; otherwise what the state says."""
        if self._lifecycle is not Lifecycle.IDLE:
            return RunState.IN_PROGRESS
        if self._failed:
            return RunState.FAILED
        return self._state.run_state() if self._state is not None else RunState.IDLE

    def to_mermaid(self) -> str:
        return mermaid(self._graph)

    # -- reservation -------------------------------------------------------------------------------------

    def _reserve(self, run_id: str, *, store: bool = True) -> tuple[str, Lease | None]:
        """Reserve synchronously: this handle first, then the store if it can answer without awaiting."""
        if self._token is not None:
            raise WorkflowRunInProgressError(
                f"workflow instance {self.instance_id!r} already has a run in progress on this handle"
            )
        token = new_token()
        lease = self.store.reserve_nowait(self.instance_id, token, owner_info(run_id)) if store else None
        self._token = token
        self._lifecycle = Lifecycle.RESERVED
        return token, lease

    def _release_local(self, token: str) -> None:
        """Compare-and-delete on this handle's reservation."""
        if self._token == token:
            self._token = None
            self._lifecycle = Lifecycle.IDLE

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[Identity]:
        """Hold the reservation for an idle operation (create_checkpoint, restore, reset)."""
        run_id = os.urandom(8).hex()
        token, lease = self._reserve(run_id)
        try:
            if lease is None:
                lease = await self.store.reserve(self.instance_id, token, owner_info(run_id))
            yield Identity(self.instance_id, self.name, self.graph_signature, run_id, lease)
        finally:
            if lease is not None:
                await self._release_lease(lease)
            self._release_local(token)

    async def _release_lease(self, lease: Lease) -> None:
        """Release the store lease; if the store cannot be reached, its TTL ends it (never mask the outcome).

        Waited for at most one TTL: a store that hangs must not keep the caller longer than the lease lives. A
        release that finishes without suspending (``MemoryStore``) costs no Task and no timer.
        """
        try:
            releasing, _ = start_eagerly(self.store.release(lease))
            if releasing is not None:
                await asyncio.wait_for(releasing, timeout=lease.ttl)
        except (WorkflowError, TimeoutError) as exc:
            logger.warning(
                "could not release the lease on %r (it expires by its TTL): %s",
                self.instance_id,
                exc or type(exc).__name__,
            )

    async def _renew(self, lease: Lease, lost: asyncio.Future[None]) -> None:
        """Keep the lease alive while the run lives; mark it lost (and complete ``lost``) when it ends.

        It ends when a renewal finds it gone, or when renewals failed for a whole TTL: the store's copy has
        expired by then whatever happened. A renewal that hangs (a half-open connection) counts as failing
        once the lease's TTL since the last good renewal has run out.
        """
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(lease.ttl / 3)
            try:
                left = last_ok + lease.ttl - time.monotonic()
                renewed = await asyncio.wait_for(self.store.renew(lease), timeout=max(left, 0.001))
            except (WorkflowError, TimeoutError) as exc:
                if time.monotonic() - last_ok < lease.ttl:
                    continue
                lease.unreachable = str(exc) or type(exc).__name__
                renewed = False
            if not renewed:
                lease.lost = True
                if not lost.done():
                    lost.set_result(None)
                return
            last_ok = time.monotonic()

    # -- state ---------------------------------------------------------------------------------------------

    async def _load_state(self) -> InstanceState:
        """The instance's state as its latest checkpoint says (the cache when it is still the latest)."""
        latest = await self.store.latest_id(self.instance_id)
        if self._state is not None and self._state.checkpoint_id == latest:
            return self._state
        if latest is None:
            self._state = InstanceState()
            return self._state
        decoded = await self.store.load_decoded(latest)
        self._check_signature(decoded.checkpoint.graph_signature, latest)
        self._state = InstanceState.from_decoded(decoded)
        return self._state

    def _check_signature(self, signature: str, checkpoint_id: str) -> None:
        if signature != self.graph_signature:
            raise GraphSignatureMismatchError(
                f"checkpoint {checkpoint_id!r} was made by a graph with signature {signature!r}, but workflow "
                f"{self.name!r} has signature {self.graph_signature!r}"
            )

    # -- runs ----------------------------------------------------------------------------------------------

    def run(
        self,
        message: Any = None,
        *,
        responses: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> RunCall:
        """Run to the end (idle, waiting on requests, or failed). Reserves now; returns an awaitable.

        ``message=None`` means no new message: answer ``responses``, resume ``checkpoint_id``, or continue.
        """
        return RunCall(self._start(message, responses, checkpoint_id))

    def stream(
        self,
        message: Any = None,
        *,
        responses: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> WorkflowStream:
        """Like ``run()``, as an async iterator of events; ``await stream.result()`` gives the ``RunResult``."""
        return WorkflowStream(self._start(message, responses, checkpoint_id))

    def hosted_stream(
        self,
        control: RunControl,
        message: Any = None,
        *,
        responses: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> WorkflowStream:
        """``stream()`` for a host that holds the lease and names the run (see ``engine/run_control.py``).

        The run neither reserves, renews nor releases the store lease: ``control.lease`` is the host's.
        """
        return WorkflowStream(self._start(message, responses, checkpoint_id, control))

    def _start(
        self,
        message: Any,
        responses: Mapping[str, Any] | None,
        checkpoint_id: str | None,
        control: RunControl | None = None,
    ) -> RunSession:
        if message is not None and checkpoint_id is not None:
            raise ValueError("pass either a new message or a checkpoint_id to resume from, not both")
        if message is not None and responses:
            raise ValueError("pass either a new message or responses to pending requests, not both")
        if control is None:
            run_id = os.urandom(8).hex()
            token, lease = self._reserve(run_id)
            holder: list[Lease] = [lease] if lease is not None else []
        else:  # hosted: only this handle is reserved here; the store lease is the host's
            run_id = control.run_id
            token, _ = self._reserve(run_id, store=False)
            holder = []

        def release() -> None:
            self._release_local(token)
            if holder:
                self.store.release_nowait(holder[0])

        events = self._execute(run_id, token, holder, message, dict(responses or {}), checkpoint_id, control)
        return RunSession(events, release, lambda seen: self._result(run_id, seen))

    async def _execute(
        self,
        run_id: str,
        token: str,
        holder: list[Lease],
        message: Any,
        responses: dict[str, Any],
        checkpoint_id: str | None,
        control: RunControl | None = None,
    ) -> AsyncGenerator[WorkflowEvent, None]:
        renewer: asyncio.Task[None] | None = None
        started = False
        tracing = run_span = None
        failure: BaseException | None = None
        if (found := tracer()) is not None:  # tracing is on: the run's span, linked to its submission
            link = links_to(control.submitted_by) if control is not None else None
            run_span = Tracing(found).start(
                RUN, attributes(instance_id=self.instance_id, run_id=run_id, workflow=self.name), link
            )
            tracing = Tracing(found).under(run_span)
            ids = LOG_CONTEXT.get()
            if ids is not None:  # a host logs this run's lines: they name its trace from now on
                ids["trace_id"] = trace_id(run_span)
        try:
            if control is not None:
                lease = control.lease
            else:
                if not holder:
                    if tracing is None:
                        holder.append(await self.store.reserve(self.instance_id, token, owner_info(run_id)))
                    else:
                        holder.append(await self._traced_reserve(tracing, token, run_id))
                lease = holder[0]
            if self._token != token:  # abandoned while acquiring the store lease
                return
            self._lifecycle = Lifecycle.RUNNING
            lost: asyncio.Future[None] | None = None
            if control is None:  # a hosted run's lease is renewed by its host (which stops it if lost)
                lost = asyncio.get_running_loop().create_future()
                renewer = asyncio.create_task(self._renew(lease, lost))
            who = Identity(self.instance_id, self.name, self.graph_signature, run_id, lease)

            state = await (self._restored(checkpoint_id) if checkpoint_id is not None else self._load_state())
            answers = self._check_responses(state, responses)
            if checkpoint_id is not None:
                await self._commit_restore(state, checkpoint_id, who)
            if message is not None:
                self._check_input(state, message)
            elif not (answers or checkpoint_id is not None or state.messages or (control and control.resume)):
                raise ValueError(
                    f"nothing to run on {self.instance_id!r}: no message, no responses and nothing queued"
                )

            started = True
            self._failed = False
            yield WorkflowEvent(EventType.STARTED, {"run_id": run_id, "instance_id": self.instance_id})
            yield WorkflowEvent(EventType.STATUS, RunState.IN_PROGRESS)
            first = self._first_changes(state, message, answers)
            if first is not None:
                first.checkpoint_id = new_checkpoint_id(self.instance_id)
                first.events = [
                    WorkflowEvent(
                        EventType.CHECKPOINT_CREATED, first.checkpoint_id, superstep=first.superstep
                    )
                ]
                await commit(self.store, state, first, who, tracing)
                yield first.events[0]
            runner = SuperstepRunner(
                self._graph, self.store, self.dispatcher, state, who, lost, control, tracing
            )
            async for event in runner.run(self._graph.max_supersteps):
                yield event
            yield WorkflowEvent(EventType.STATUS, state.run_state())
        except RunCancelledError:  # stopped by its host at a barrier: the state is that barrier's, no failure
            raise
        except Exception as exc:
            failure = exc
            if started and self._token == token:  # a superseded run never touches the handle
                self._failed = True
                yield WorkflowEvent(
                    EventType.FAILED,
                    str(exc),
                    executor_id=getattr(exc, "executor_id", None),
                    details={"error_type": type(exc).__name__},
                )
                yield WorkflowEvent(EventType.STATUS, RunState.FAILED)
            raise
        except BaseException:  # cancelled, or the stream was closed: the state is the last barrier's
            if started and self._token == token:
                self._failed = True
            raise
        finally:
            if renewer is not None:
                renewer.cancel()
            if holder:
                await self._release_lease(holder[0])
            self._release_local(token)
            if run_span is not None:
                run_span.set_attribute("barrierflow.superstep", self._state.superstep if self._state else 0)
                end_span(run_span, failure)

    async def _traced_reserve(self, tracing: Tracing, token: str, run_id: str) -> Lease:
        """``store.reserve`` under a ``barrierflow.lease.acquire`` span (it waits while another run holds it)."""
        span = tracing.start(LEASE_ACQUIRE, attributes(instance_id=self.instance_id, run_id=run_id))
        try:
            lease = await self.store.reserve(self.instance_id, token, owner_info(run_id))
        except BaseException as exc:
            end_span(span, exc)
            raise
        span.set_attribute("barrierflow.epoch", lease.epoch)
        end_span(span)
        return lease

    def _check_responses(
        self, state: InstanceState, responses: dict[str, Any]
    ) -> list[tuple[PendingRequest, Any]]:
        """Validate answers before anything runs: known ids, values of the requested type."""
        answers = []
        for request_id, value in responses.items():
            request = state.pending_requests.get(request_id)
            if request is None:
                raise UnknownRequestError(
                    f"no pending request {request_id!r} on {self.instance_id!r}; pending: "
                    f"{sorted(state.pending_requests) or 'none'}"
                )
            expected = request.response_type
            if expected is not Any and expected is not object and not isinstance(value, expected):
                raise TypeError(
                    f"the answer to request {request_id!r} must be {getattr(expected, '__name__', expected)}, "
                    f"not {type(value).__name__}"
                )
            answers.append((request, value))
        return answers

    def _check_input(self, state: InstanceState, message: Any) -> None:
        if state.messages:
            raise WorkflowNotIdleError(
                f"{len(state.messages)} message(s) of an unfinished run are still queued on {self.instance_id!r}: "
                "continue it with run() or discard it with reset_for_new_run()"
            )
        start = self._graph.executors[self._graph.start_id]
        if not start.can_handle(message):
            accepted = ", ".join(
                getattr(s.message_type, "__name__", repr(s.message_type)) for s in start.handler_specs
            )
            raise TypeError(
                f"start executor {start.id!r} has no handler for {type(message).__name__}; it accepts {accepted}"
            )

    def _first_changes(
        self, state: InstanceState, message: Any, answers: list[tuple[PendingRequest, Any]]
    ) -> Changes | None:
        """The superstep-0 checkpoint of a run with a new message or with answers (``None`` otherwise)."""
        if message is None and not answers:
            return None
        queued = [] if message is None else [Delivery(self._graph.start_id, message, (INPUT_SOURCE,))]
        queued = list(state.messages) + queued
        pending = dict(state.pending_requests)
        for request, value in answers:
            queued.append(Delivery(request.source_executor_id, value, (INPUT_SOURCE,), request))
            del pending[request.request_id]
        superstep = 0 if message is not None else state.superstep
        return Changes(superstep=superstep, messages=queued, pending_requests=pending)

    def _result(self, run_id: str, events: list[WorkflowEvent]) -> RunResult:
        state = self._state if self._state is not None else InstanceState()
        asked = {e.request_id: e for e in events if e.type == EventType.REQUEST_INFO}
        pending = {
            rid: asked.get(rid) or request_info_event(request)
            for rid, request in state.pending_requests.items()
        }
        return RunResult(
            outputs=outputs_of(events),
            events=events,
            status=self.status,
            pending_requests=pending,
            checkpoint_id=state.checkpoint_id,
            run_id=run_id,
        )

    # -- idle operations -----------------------------------------------------------------------------------

    async def create_checkpoint(self, metadata: Mapping[str, Any] | None = None) -> str:
        """Checkpoint the idle instance (also before its first run); it parents the next automatic one."""
        async with self._exclusive() as who:
            state = await self._load_state()
            if state.messages:
                raise WorkflowNotIdleError(
                    f"{len(state.messages)} message(s) are still queued on {self.instance_id!r}; run() them or "
                    "reset_for_new_run() before checkpointing"
                )
            return await commit(self.store, state, Changes(metadata=dict(metadata or {})), who)

    async def restore(self, checkpoint_id: str) -> str:
        """Load a checkpoint into the instance without running; writes (and returns) a copy parented by it."""
        async with self._exclusive() as who:
            state = await self._restored(checkpoint_id)
            checkpoint = await self._commit_restore(state, checkpoint_id, who)
            self._failed = False
            return checkpoint

    async def _restored(self, checkpoint_id: str) -> InstanceState:
        """The state a checkpoint holds (not yet the instance's: ``_commit_restore`` makes it so)."""
        decoded = await self.store.load_decoded(checkpoint_id)
        cp = decoded.checkpoint
        self._check_signature(cp.graph_signature, checkpoint_id)
        return InstanceState.from_decoded(decoded, same_instance=cp.instance_id == self.instance_id)

    async def _commit_restore(self, state: InstanceState, checkpoint_id: str, who: Identity) -> str:
        changes = Changes(parent=checkpoint_id, metadata={"restored_from": checkpoint_id})
        copy_id = await commit(self.store, state, changes, who)
        self._state = state
        return copy_id

    async def reset_for_new_run(self) -> str:
        """Clean slate, all or nothing: every executor's ``reset()`` first, then an empty checkpoint."""
        async with self._exclusive() as who:
            for executor in self._graph.executors.values():
                try:
                    await executor.reset()
                except Exception as exc:
                    raise WorkflowError(
                        f"reset() of executor {executor.id!r} failed ({type(exc).__name__}: {exc}); "
                        "the instance was not changed"
                    ) from exc
            state = InstanceState()
            checkpoint_id = await commit(
                self.store, state, Changes(fresh=True, metadata={"reset": True}), who
            )
            self._state = state
            self._failed = False
            return checkpoint_id

    async def pending_requests(self) -> dict[str, PendingRequest]:
        """The requests waiting for an answer, from the latest checkpoint."""
        return dict((await self._load_state()).pending_requests)

    def __repr__(self) -> str:
        return f"Workflow(name={self.name!r}, instance_id={self.instance_id!r}, status={self.status.value})"
