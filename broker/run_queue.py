"""``RunQueue``: submit runs to Redis, and follow, answer, cancel or read them from any process.

Coordinators (``barrierflow.workers.Coordinator``) take the runs and execute them; this side never runs a
workflow. How the queue is laid out (``broker/keys.py`` lists the keys):

* **Per instance, a FIFO of runs** (``rq:queue``) and a record per run (``rq:run:<hex>``), in the instance's
  hash slot. Runs of one instance execute one at a time, in submission order.
* **One ready stream for all instances** (``P:rq:ready``), read by the consumer group of the coordinators. An
  entry means "instance I has runnable work"; an instance has at most one (``rq:sched.entry``), however many
  runs it has queued. A coordinator that reads it drains that instance's runs one after another under one
  lease, and acknowledges the entry when the instance's FIFO is empty. A busy instance therefore occupies one
  entry and one coordinator slot, and never holds up other instances (no head-of-line blocking); a run
  waiting for its instance occupies nothing but its place in the FIFO.
* **Takeover** is the consumer group's pending list: each coordinator re-claims its in-flight entries every
  third of the lease TTL (resetting their idle time) in the same round trip that renews their leases, and
  sweeps entries idle longer than the lease TTL (``XAUTOCLAIM``): their coordinator is dead, and so is its
  lease. See ``workers/coordinator.py`` for the timeline.

Every state change is one Lua call that moves the record and its indexes together (``rq_submit.lua``,
``rq_start.lua``, ``rq_commit.lua``, ``rq_finish.lua``, ``rq_cancel.lua``).

**Redis topology.** Those calls touch an instance's keys *and* the ready stream, which lives in no instance's
slot, so the run queue needs a single-shard Redis (standalone, or Sentinel for failover); Redis Cluster is not
supported for the queue (the checkpoint store alone stays Cluster-safe). Sharding the ready stream by hash tag,
with one consumer group per shard, would lift that; it is not done here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from barrierflow.engine import codec
from barrierflow.engine.builder import WorkflowBuilder
from barrierflow.engine.checkpoint import instance_of
from barrierflow.engine.checkpoint_format import CheckpointSummary, summarize_head
from barrierflow.engine.errors import CheckpointDecodeError, RunCancelledError, WorkflowRunInProgressError
from barrierflow.engine.events import EventType, RunResult, RunState, WorkflowEvent, request_info_event
from barrierflow.engine.graph import Graph
from barrierflow.engine.registry import registered_workflows, workflow_graph
from barrierflow.engine.tracing import QUEUE_SUBMIT, Tracing, attributes, traceparent, tracer
from barrierflow.engine.tracing import end as end_span

from .batching import ScriptBatcher
from .connection import blocking_limit
from .metrics import SUBMITTED, count_run
from .per_loop import PerLoop
from .redis_store import RedisStore, _redis_errors
from .run_events import StreamReader, follow_stream, parse_id
from .run_records import (
    CANCELLED,
    ENDED,
    FAILED,
    RUN_STATES,
    InstanceInfo,
    RunInfo,
    RunTicket,
    decode_event,
    encode_event,
    encode_input,
    encode_result,
    error_from_record,
    error_record,
    new_run_id,
    run_info,
    run_result,
    split_run_id,
)
from .run_waiters import RunWaiters
from .scripts import QUEUE_SCRIPTS, milliseconds


class _LoopState:
    """What a ``RunQueue`` holds per event loop: its script batcher, waiters and stream reader."""

    def __init__(self, queue: RunQueue) -> None:
        waiting = queue.store.blocking_client  # blocking reads: the store's pool for waits
        idle = min(5.0, blocking_limit(waiting))
        self.scripts = ScriptBatcher(lambda: queue.store.client, (*QUEUE_SCRIPTS, "renew"))
        self.waiters = RunWaiters(waiting, queue.keys.queue_key("ended"), idle)
        self.reader = StreamReader(waiting, queue.store.client, milliseconds(idle))

    async def aclose(self) -> None:
        await self.waiters.aclose()
        await self.reader.aclose()


@dataclass(slots=True)
class _Submission:
    """A checked run and the arguments of its ``rq_submit`` call."""

    ticket: RunTicket
    keys: list[str]
    args: list[Any]
    #: its ``barrierflow.queue.submit`` span when tracing is on (``_enqueue`` ends it)
    span: Any = None


class RunQueue:
    """Durable runs in Redis: ``submit``, ``get``, ``wait``, ``cancel``, ``instance``, ``stream``, ``events``.

    Same Redis and prefix as ``store``. ``result_ttl``: seconds an ended run's record is kept (and at most
    ``keep_results`` ended runs per instance). ``events_maxlen``: entries kept per instance event stream
    (approximately: Redis trims whole nodes of 100). ``instances_index_max``: entries of the index of
    instances the listings read. A coordinator writes results and events with its queue's settings, so give both
    sides the same ones (``Coordinator(store, queue=RunQueue(store, ...))``).
    """

    def __init__(
        self,
        store: RedisStore,
        *,
        result_ttl: float = 7 * 86400,
        events_maxlen: int = 10_000,
        keep_results: int = 100,
        instances_index_max: int = 100_000,
    ) -> None:
        if result_ttl <= 0 or events_maxlen < 1 or keep_results < 1:
            raise ValueError("result_ttl, events_maxlen and keep_results must be positive")
        self.store = store
        self.keys = store.keys
        self.result_ttl = result_ttl
        self.events_maxlen = events_maxlen
        self.keep_results = keep_results
        self.instances_index_max = instances_index_max
        self._loops: PerLoop[_LoopState] = PerLoop(lambda: _LoopState(self), _LoopState.aclose)
        self._graphs: dict[Any, tuple[str, Graph | None]] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> RunQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop this loop's subscription and stream reader (the store's connections are the store's).

        A loop that ends without it stops them in its own shutdown (``broker/per_loop.py``)."""
        await self._loops.aclose()

    def _state(self) -> _LoopState:
        return self._loops.get()

    @property
    def ready_key(self) -> str:
        return self.keys.queue_key("ready")

    @property
    def ended_channel(self) -> str:
        return self.keys.queue_key("ended")

    @property
    def cancel_channel(self) -> str:
        return self.keys.queue_key("cancel")

    async def call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of the queue's scripts (batched with the other calls of this loop turn)."""
        return await self._state().scripts.call(script, keys, args)

    # -- submit ----------------------------------------------------------------------------------------------

    def _workflow(self, workflow: Any) -> tuple[str, Graph | None]:
        """The workflow's name and, when this process knows it, its graph (to check the input early)."""
        known = self._graphs.get(workflow)
        if known is not None:
            return known
        if isinstance(workflow, str):
            name = workflow
            graph = workflow_graph(name) if name in registered_workflows() else None
        elif isinstance(workflow, WorkflowBuilder):
            name, graph = workflow.name, workflow.build_graph()
        elif callable(workflow):
            builder = workflow()
            if not isinstance(builder, WorkflowBuilder):
                raise TypeError(f"{workflow!r} returned {type(builder).__name__}, not a WorkflowBuilder")
            name, graph = builder.name, builder.build_graph()
        else:
            raise TypeError(
                f"workflow must be a registered name or a @register_workflow factory, not {type(workflow).__name__}"
            )
        if graph is not None and (isinstance(workflow, str) or callable(workflow)):
            self._graphs[workflow] = (name, graph)
        return name, graph

    async def submit(
        self,
        workflow: Any,
        message: Any = None,
        *,
        instance_id: str | None = None,
        responses: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
        strategy: str = "enqueue",
        metadata: Mapping[str, Any] | None = None,
    ) -> RunTicket:
        """Queue a run; it is durable in Redis when this returns. Modes as ``Workflow.run``.

        ``workflow``: a registered name or a ``@register_workflow`` factory. ``instance_id``: a new instance
        unless given (a ``checkpoint_id`` names its own). ``strategy="reject"``: raise
        ``WorkflowRunInProgressError`` instead of queueing when the instance has a queued or running run.
        """
        submission = self._submission(
            workflow, message, instance_id, responses, checkpoint_id, strategy, metadata
        )
        await self._enqueue(submission)
        return submission.ticket

    async def submit_and_wait(
        self, workflow: Any, message: Any = None, *, timeout: float | None, **options: Any
    ) -> tuple[RunTicket, RunInfo | None]:
        """``submit`` (same ``options``), then the run's record once it ended, or ``None`` if it has not ended
        within ``timeout`` seconds (it goes on).

        One round trip fewer than ``submit`` then ``wait_ended``: the waiter is registered before the run
        exists, so no end can be missed and nothing needs reading until the end's notice arrives.
        """
        submission = self._submission(workflow, message, **options)
        run_id = submission.ticket.run_id
        waiters = self._state().waiters
        start = time.monotonic()
        future = await waiters.watch(run_id)
        try:
            await self._enqueue(submission)
            try:
                async with asyncio.timeout(timeout):
                    await future
            except TimeoutError:
                return submission.ticket, None
        finally:
            waiters.forget(run_id, future)
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        try:  # the notice said it ended (or the subscription was re-made: then this waits on)
            return submission.ticket, await self.wait_ended(run_id, timeout=remaining)
        except TimeoutError:
            return submission.ticket, None

    def _submission(
        self,
        workflow: Any,
        message: Any = None,
        instance_id: str | None = None,
        responses: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
        strategy: str = "enqueue",
        metadata: Mapping[str, Any] | None = None,
    ) -> _Submission:
        """A run, checked and named, ready to be queued (nothing is sent to Redis yet)."""
        if strategy not in ("enqueue", "reject"):
            raise ValueError(f"strategy must be 'enqueue' or 'reject', not {strategy!r}")
        if message is not None and checkpoint_id is not None:
            raise ValueError("pass either a new message or a checkpoint_id to resume from, not both")
        if message is not None and responses:
            raise ValueError("pass either a new message or responses to pending requests, not both")
        name, graph = self._workflow(workflow)
        if instance_id is None and checkpoint_id is not None:
            instance_id = instance_of(checkpoint_id)
            if instance_id is None:
                raise ValueError(f"{checkpoint_id!r} is not a barrierflow checkpoint id: pass instance_id=")
        if instance_id is None:
            if message is None:
                raise ValueError(
                    "a new instance needs a message (answers and continuations need instance_id=)"
                )
            instance_id = new_instance_id()
        if graph is not None and message is not None:
            start = graph.executors[graph.start_id]
            if not start.can_handle(message):
                raise TypeError(f"start executor {start.id!r} has no handler for {type(message).__name__}")
        run_id, run_hex = new_run_id(instance_id)
        keys, span, submitted_by = self.keys, None, None
        found = tracer()
        if found is not None:  # its span's context rides in the run's input: the run's span links to it
            span = Tracing(found).start(
                QUEUE_SUBMIT, attributes(workflow=name, instance_id=instance_id, run_id=run_id)
            )
            submitted_by = traceparent(span)
        return _Submission(
            RunTicket(run_id, instance_id),
            [
                keys.run_queue(instance_id),
                keys.run_sched(instance_id),
                keys.run_record(instance_id, run_hex),
                keys.events(instance_id),
                keys.lock(instance_id),
                self.ready_key,
                keys.queue_key("instances"),
            ],
            [
                instance_id,
                run_hex,
                run_id,
                1 if strategy == "reject" else 0,
                name,
                graph.signature if graph is not None else "",
                encode_input(message, dict(responses or {}), checkpoint_id, submitted_by),
                codec.encode(dict(metadata)) if metadata else b"",
                0,  # the submission time, set when sent
                self.instances_index_max,
                keys.base(instance_id),
            ],
            span,
        )

    async def _enqueue(self, submission: _Submission) -> None:
        if submission.span is None:
            return await self._send(submission)
        try:
            await self._send(submission)
        except BaseException as exc:
            end_span(submission.span, exc)
            raise
        end_span(submission.span)

    async def _send(self, submission: _Submission) -> None:
        instance_id = submission.ticket.instance_id
        submission.args[8] = _now_ms()
        with _redis_errors("submit", instance_id):
            reply = await self.call("rq_submit", submission.keys, submission.args)
        if reply[0] == 1:
            count_run(submission.args[4], SUBMITTED)
        if reply[0] == 0:
            busy = reply[1].decode()
            what = (
                "a run outside the queue holds its lease" if busy == "lock" else f"run {instance_id}@{busy}"
            )
            raise WorkflowRunInProgressError(
                f"instance {instance_id!r} is busy ({what} is queued or running); strategy='reject' refused "
                "the submission"
            )

    # -- read ------------------------------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunInfo:
        """The run's record; ``LookupError`` for an unknown id (or a record past its ``result_ttl``)."""
        instance_id, _ = split_run_id(run_id)
        with _redis_errors("get", instance_id):
            found = await self._records([run_id])
        if not found[0][0]:
            raise LookupError(f"no run {run_id!r} (never submitted here, or its record expired)")
        return run_info(run_id, *found[0])

    async def _records(
        self, run_ids: list[str]
    ) -> list[tuple[dict[bytes, bytes], bytes | None, bytes | None]]:
        """``(record hash, result, metadata)`` of each run, in one round trip (an empty hash: no such run)."""
        keys = self.keys
        async with self.store.client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                instance_id, run_hex = split_run_id(run_id)
                pipe.hgetall(keys.run_record(instance_id, run_hex))
                pipe.get(keys.run_result(instance_id, run_hex))
                pipe.get(keys.run_metadata(instance_id, run_hex))
            replies = await pipe.execute()
        return [tuple(replies[i : i + 3]) for i in range(0, len(replies), 3)]  # type: ignore[misc]

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:
        """The run's ``RunResult`` once it ended, without polling (a pub/sub notice wakes this).

        A failed run raises its typed error (``ExecutorFailedError``, ...), a cancelled one
        ``RunCancelledError``; ``TimeoutError`` when it has not ended within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            return await self._outcome(await self.wait_ended(run_id))

    async def wait_ended(self, run_id: str, timeout: float | None = None) -> RunInfo:
        """The run's record once it ended (whatever the outcome: nothing raised for a failed run), without
        polling; ``TimeoutError`` when it has not ended within ``timeout`` seconds."""
        waiters = self._state().waiters
        async with asyncio.timeout(timeout):
            while True:
                future = await waiters.watch(run_id)
                try:
                    info = await self.get(run_id)
                    if info.ended:
                        return info
                    await future
                finally:
                    waiters.forget(run_id, future)

    async def _outcome(self, info: RunInfo) -> RunResult:
        if info.state == CANCELLED:
            raise RunCancelledError(
                f"run {info.run_id!r} was cancelled" + (f": {info.error['message']}" if info.error else "")
            )
        if info.state == FAILED:
            raise error_from_record(info.error or {"type": "WorkflowError", "message": "failed"})
        events = [event async for event in self.stream(info.run_id) if event.type != EventType.RUN_ENDED]
        return run_result(info, events)

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run: queued, it never starts; running, it stops at a barrier (the instance stays there).

        ``False`` when the run had ended already. A run whose coordinator was already writing its last
        barrier may still end ``completed``: the request came too late to matter.
        """
        instance_id, run_hex = split_run_id(run_id)
        error = error_record(RunCancelledError("cancelled before it started"))
        ended = WorkflowEvent(EventType.RUN_ENDED, {"state": CANCELLED, "status": None, "error": error})
        keys = self.keys
        with _redis_errors("cancel", instance_id):
            reply = await self.call(
                "rq_cancel",
                [
                    keys.run_record(instance_id, run_hex),
                    keys.run_queue(instance_id),
                    keys.events(instance_id),
                    keys.runs_done(instance_id),
                ],
                [
                    run_hex,
                    run_id,
                    _now_ms(),
                    encode_result(None, [], {}, error),
                    self.events_maxlen,
                    self.events_ttl_ms,
                    milliseconds(self.result_ttl),
                    self.keep_results,
                    self.ended_channel,
                    self.cancel_channel,
                    keys.base(instance_id),
                    encode_event(ended, instance_id, run_hex),
                ],
            )
        if reply == -1:
            raise LookupError(f"no run {run_id!r} (never submitted here, or its record expired)")
        return reply > 0

    @property
    def events_ttl_ms(self) -> int:
        """Event streams expire with the instance's checkpoints (``RedisStore.checkpoint_ttl``), if set."""
        ttl = self.store.checkpoint_ttl
        return 0 if ttl is None else milliseconds(ttl)

    async def instance(self, instance_id: str) -> InstanceInfo:
        """The instance: its latest checkpoint, status, pending requests, active and queued runs, lease holder.

        ``LookupError`` when the instance has neither checkpoints nor runs here.
        """
        keys, client = self.keys, self.store.client
        with _redis_errors("instance", instance_id):
            async with client.pipeline(transaction=False) as pipe:
                pipe.hget(keys.run_sched(instance_id), "active")
                pipe.lrange(keys.run_queue(instance_id), 0, -1)
                pipe.get(keys.owner(instance_id))
                pipe.zrevrange(keys.index(instance_id), 0, 0)
                pipe.getrange(keys.runs_done(instance_id), 0, 15)
                pipe.zscore(keys.queue_key("instances"), instance_id)
                active, queued, owner, latest, last_done, score = await pipe.execute()
        if not latest and not active and not queued and not last_done:
            raise LookupError(f"no instance {instance_id!r} here (no checkpoint and no run)")
        checkpoint = await self._latest_view(latest[0].decode()) if latest else None
        last_run = await self._summary(f"{instance_id}@{last_done.decode()}") if last_done else None
        holder = _json(owner)
        status = _instance_status(checkpoint, active or holder, last_run)
        pending = {
            rid: request_info_event(r) if r is not None else _undecoded_request(rid, checkpoint)
            for rid, r in (checkpoint.pending_requests.items() if checkpoint else ())
        }
        name = checkpoint.workflow_name if checkpoint else None
        if name is None and (active or queued):
            first = (active or queued[0]).decode()
            summary = await self._summary(f"{instance_id}@{first}")
            name = summary.workflow_name if summary else None
        if name is None and last_run is not None:
            name = last_run.workflow_name or None
        return InstanceInfo(
            instance_id=instance_id,
            workflow_name=name,
            status=status,
            checkpoint_id=checkpoint.checkpoint_id if checkpoint else None,
            superstep=checkpoint.superstep if checkpoint else 0,
            pending_requests=pending,
            active_run_id=f"{instance_id}@{active.decode()}" if active else None,
            queued_run_ids=[f"{instance_id}@{h.decode()}" for h in queued],
            holder=holder,
            updated_at=_from_ms(score),
        )

    async def _summary(self, run_id: str) -> RunInfo | None:
        """A run's record without its outputs and requests (``None`` when it expired).

        What ``instance()`` needs of a run is plain (state, status, checkpoint id); its outputs may hold types
        this process never imported, and must not make a listing fail.
        """
        with _redis_errors("get", split_run_id(run_id)[0]):
            [found] = await self._records([run_id])
        return run_info(run_id, *found, full=False) if found[0] else None

    async def _latest_view(self, checkpoint_id: str) -> Any:
        """The instance's latest checkpoint; its plain summary when this process cannot decode its values.

        A listing of instances (``runs list``, the HTTP API, the page) must not fail because one instance's
        state holds a type this process never imported: its status, superstep and request ids are plain
        fields of the head, readable anyway.
        """
        try:
            return await self.store.load_checkpoint(checkpoint_id)
        except CheckpointDecodeError as exc:
            record = await self.store.read_record(checkpoint_id)
            if record is None:
                raise
            return _UndecodedCheckpoint(summarize_head(record[0]), str(exc))

    # -- events ----------------------------------------------------------------------------------------------

    async def stream(self, run_id: str) -> AsyncIterator[WorkflowEvent]:
        """The run's events, live; ends with its ``run_ended`` event (also when it ended long ago)."""
        instance_id, run_hex = split_run_id(run_id)
        record = self.keys.run_record(instance_id, run_hex)
        client = self.store.client
        with _redis_errors("stream", instance_id):
            state, after = await client.hmget(record, ["state", "after"])
        if state is None:
            raise LookupError(f"no run {run_id!r} (never submitted here, or its record expired)")

        async def ended() -> bool:  # caught up without seeing run_ended: trimmed away, or not yet written
            current = await client.hget(record, "state")
            return current is None or current.decode() in ENDED

        entries = follow_stream(
            client,
            lambda: self._state().reader,
            self.keys.events(instance_id),
            after.decode(),
            live=True,
            at_tail=ended,
        )
        async with contextlib.aclosing(entries):  # closed with this iterator, not when collected
            async for entry_id, entry in entries:
                event = decode_event(instance_id, entry_id, entry)
                if event.run_id != run_id:
                    continue
                yield event
                if event.type == EventType.RUN_ENDED:
                    return

    async def events(
        self, instance_id: str, after: str | None = None, follow: bool = True
    ) -> AsyncIterator[WorkflowEvent]:
        """The instance's events after event id ``after`` (from the oldest kept one when ``None``): exactly
        the following ones, no gap and no duplicate; then, with ``follow``, new ones as they are written."""
        cursor = "0-0" if after is None else after
        parse_id(cursor)
        entries = follow_stream(
            self.store.client,
            lambda: self._state().reader,
            self.keys.events(instance_id),
            cursor,
            live=follow,
        )
        async with contextlib.aclosing(entries):  # closed with this iterator, not when collected
            async for entry_id, entry in entries:
                yield decode_event(instance_id, entry_id, entry)

    # -- listings --------------------------------------------------------------------------------------------

    async def list_runs(
        self, *, instance_id: str | None = None, state: str | None = None, limit: int = 50
    ) -> list[RunInfo]:
        """Runs of one instance (queued ones last submitted first, the running one, then the ended ones, newest
        first), or of the most recently active instances in that order, until ``limit``.

        Summaries: ``outputs`` and ``pending_requests`` are left empty (``get`` has them).
        """
        if state is not None and state not in RUN_STATES:
            raise ValueError(f"state must be one of {', '.join(RUN_STATES)}, not {state!r}")
        client = self.store.client
        instances = [instance_id] if instance_id is not None else None
        found: list[RunInfo] = []
        start, page = 0, max(limit, 20)
        while len(found) < limit:
            if instance_id is None:
                index = self.keys.queue_key("instances")
                instances = [i.decode() for i in await client.zrevrange(index, start, start + page - 1)]
                start += page
            if not instances:
                break
            infos = await self._infos(await self._run_ids(instances))
            found += [info for info in infos if state is None or info.state == state]
            if instance_id is not None:
                break
        return found[:limit]

    async def _run_ids(self, instance_ids: list[str]) -> list[str]:
        """The run ids of each instance (queued, running, ended), in one round trip."""
        keys = self.keys
        async with self.store.client.pipeline(transaction=False) as pipe:
            for instance_id in instance_ids:
                pipe.lrange(keys.run_queue(instance_id), 0, -1)
                pipe.hget(keys.run_sched(instance_id), "active")
                pipe.get(keys.runs_done(instance_id))
            replies = await pipe.execute()
        ids = []
        for n, instance_id in enumerate(instance_ids):
            queued, active, done = replies[3 * n : 3 * n + 3]
            ended = [done[i : i + 16] for i in range(0, len(done or b""), 16)]
            hexes = [*reversed(queued), *([active] if active else []), *ended]
            ids += [f"{instance_id}@{h.decode()}" for h in hexes]
        return ids

    async def _infos(self, run_ids: list[str]) -> list[RunInfo]:
        """Summaries of several runs in one round trip (no outputs or requests: their types may not be
        importable here); runs whose record is gone are skipped."""
        if not run_ids:
            return []
        records = await self._records(run_ids)
        return [
            run_info(r, *found, full=False) for r, found in zip(run_ids, records, strict=True) if found[0]
        ]

    async def list_instances(
        self, *, workflow: str | None = None, status: RunState | str | None = None, limit: int = 50
    ) -> list[InstanceInfo]:
        """Instances, most recently active first (submitted to, started or ended a run).

        Each instance takes a few round trips to describe, so a listing (the page polls one) describes them
        ``_DESCRIBED_AT_ONCE`` at a time, concurrently, and stops as soon as it has ``limit`` of them.
        """
        wanted = RunState(status) if status is not None else None
        client, index = self.store.client, self.keys.queue_key("instances")
        found: list[InstanceInfo] = []
        start, page = 0, max(limit, 20) * 2
        while len(found) < limit:
            ids = [i.decode() for i in await client.zrevrange(index, start, start + page - 1)]
            if not ids:
                break
            for at in range(0, len(ids), _DESCRIBED_AT_ONCE):
                chunk = ids[at : at + _DESCRIBED_AT_ONCE]
                found += [
                    info
                    for info in await asyncio.gather(*(self._described(i) for i in chunk))
                    if info is not None
                    and (workflow is None or info.workflow_name == workflow)
                    and (wanted is None or info.status is wanted)
                ]
                if len(found) >= limit:
                    break
            start += page
        return found[:limit]

    async def _described(self, instance_id: str) -> InstanceInfo | None:
        """``instance()``, or ``None`` (and the index entry dropped) for an instance that is gone."""
        try:
            return await self.instance(instance_id)
        except LookupError:
            await self.store.client.zrem(self.keys.queue_key("instances"), instance_id)
            return None


#: Instances a listing describes concurrently (each takes a few round trips of its own).
_DESCRIBED_AT_ONCE = 16


def new_instance_id() -> str:
    """A fresh instance id: 80 random bits as 20 hex digits (as a checkpoint id's suffix).

    Shorter than a UUID on purpose: the id is in the name of every key of the instance and in its checkpoints,
    so 12 characters fewer are a few hundred bytes per idle instance; 80 bits keep collisions out of reach
    (about one in 10^6 after a billion instances).
    """
    return os.urandom(10).hex()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _from_ms(score: float | None) -> datetime | None:
    return None if score is None else datetime.fromtimestamp(score / 1000, UTC)


def _json(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"raw": value}


class _UndecodedCheckpoint:
    """What ``instance()`` needs of a checkpoint, from its summary (values of unknown types stay opaque)."""

    def __init__(self, summary: CheckpointSummary, why: str) -> None:
        self.checkpoint_id, self.superstep = summary.checkpoint_id, summary.superstep
        self.workflow_name, self.why = summary.workflow_name, why
        self.messages = range(summary.queued_messages)
        self.pending_requests: dict[str, None] = dict.fromkeys(summary.pending_request_ids)


def _undecoded_request(request_id: str, checkpoint: _UndecodedCheckpoint) -> WorkflowEvent:
    """A pending request whose data this process cannot decode: its id, and why its data is missing."""
    return WorkflowEvent(
        EventType.REQUEST_INFO, None, request_id=request_id, details={"undecoded": checkpoint.why}
    )


def _instance_status(checkpoint: Any, busy: Any, last_run: RunInfo | None) -> RunState:
    if busy:
        return RunState.IN_PROGRESS
    ended_here = last_run is not None and last_run.status is not None and last_run.state != CANCELLED
    if ended_here and (checkpoint is None or last_run.checkpoint_id == checkpoint.checkpoint_id):
        return last_run.status
    failed = last_run is not None and last_run.state == FAILED
    if checkpoint is None:  # no run reached its first checkpoint (e.g. its coordinator lacked the workflow)
        return RunState.FAILED if failed else RunState.IDLE
    if checkpoint.messages:
        # work left at a barrier that no run is continuing: a failed (or cancelled) run's
        return RunState.FAILED if failed else RunState.IN_PROGRESS
    return RunState.IDLE_WITH_PENDING_REQUESTS if checkpoint.pending_requests else RunState.IDLE
