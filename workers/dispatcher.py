"""``CeleryDispatcher``: the coordinator's side of distributed mode. Runs each superstep on Celery workers.

Per superstep:

1. **Plan.** The runner's executor batches (all deliveries of one executor, in order) are packed whole into
   about ``k`` tasks, ``k`` from the worker slots (the pool sizes of the live workers on the queue, in the
   worker registry, ``broker/worker_registry.py``) and the number of deliveries (never one task per message,
   never one executor split across tasks, so an executor still handles its deliveries one at a time, in
   order). The committed shared state is encoded once and rides in every task.
2. **Send** the tasks to the queue (msgpack), packed with the tasks of the other runs of this process that are
   ready in the same loop turn (``workers/packing.py``): a barrier of many runs costs a few Celery messages
   (about ``slots * tasks_per_slot``, each at most ``pack_size`` tasks), not one per run. A lone task goes
   out as a plain single task in the next loop turn. Each task in a pack stays fenced, claimed, checked and
   re-sent on its own, as below.
3. **Barrier without chords.** Each task's worker writes a fenced, first-write-wins record and pushes the task
   number on a notify list (``broker/results.py``). This side sleeps in ``BRPOP`` until a task finishes or the
   next check. Every ``redispatch_after`` seconds it checks the tasks without a result, reading result, claim
   and "started" together (one ``MGET``):

   * a live claim: a worker runs it, however long its handlers take; check again later;
   * its latest copy was never picked up: it waits in the queue. It is **not** sent again (a copy per check
     would pile up in the queue, each carrying the whole shared state); the caller is warned, in the log and
     as a ``warning`` event, at growing intervals, with the registry's reason: no live worker consumes the
     queue, or its workers are all busy;
   * picked up, claim lapsed, no result: its worker died. Sent again after checking that the run still holds
     its lease; checks of that task then back off exponentially, and after ``max_attempts`` sends the
     superstep fails (a handler that kills its worker process would otherwise kill workers forever).
4. **Return** the outcomes and the workers' live events (``emit``, in order per executor). A handler failure
   returns at once (the runner raises ``ExecutorFailedError``; the other tasks' results are discarded). The
   superstep's keys are deleted and it is marked collected, so no late copy re-creates them; they expire by
   their TTL if this process dies first. A failed clean-up is logged, never raised over the run's outcome.

Nothing here commits: the runner commits the returned outcomes at the barrier, so a task run twice (Celery
redelivery, re-dispatch) has its effects committed once.

Connection to Redis — the records live in the store's Redis, next to the instance's lease:

* ``CeleryDispatcher(app, store=redis_store)``: the clearest, uses the store's client and prefix.
* ``CeleryDispatcher(app)``: the Redis URL and prefix of the app's configuration (``BARRIERFLOW_REDIS_URL``,
  ``BARRIERFLOW_PREFIX``; ``workers.config``), the same the workers use. If they do not point at the store
  holding the run's lease, the first superstep says so instead of waiting forever.
* ``CeleryDispatcher(app, redis_url=..., prefix=...)`` or ``redis=<redis.asyncio.Redis>``: explicit.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from barrierflow.broker.batching import ScriptBatcher
from barrierflow.broker.connection import RedisOptions, async_client
from barrierflow.broker.per_loop import PerLoop
from barrierflow.broker.results import ResultKeys, ResultReader, results_batcher
from barrierflow.broker.worker_registry import WorkerEntry, WorkerRegistry
from barrierflow.engine import codec
from barrierflow.engine.dispatch import Dispatcher, EventSink, ExecutorBatch, SuperstepResult, SuperstepWork
from barrierflow.engine.errors import (
    CheckpointDecodeError,
    GraphSignatureMismatchError,
    ReservationLostError,
    SerializationError,
    WorkflowError,
)
from barrierflow.engine.events import EventType, WorkflowEvent
from barrierflow.engine.executor import Executor

from .config import (
    DEFAULT_PACK_SIZE,
    DEFAULT_PREFIX,
    DEFAULT_REDIS_URL,
    PACK_TASK_NAME,
    TASK_NAME,
    TRACEPARENT,
    TRACEPARENTS,
)
from .packing import Packer
from .wire import TaskEnvelope, TaskResult, decode_result, encode_body, encode_task

if TYPE_CHECKING:
    from celery import Celery

    from barrierflow.broker import RedisStore

logger = logging.getLogger("barrierflow.workers")

#: Refusals a worker reports, raised here as the engine error of that name.
_REFUSALS: dict[str, type[WorkflowError]] = {
    cls.__name__: cls
    for cls in (GraphSignatureMismatchError, CheckpointDecodeError, SerializationError, WorkflowError)
}

#: The longest pause between two checks of a task whose workers keep dying (seconds).
MAX_CHECK_INTERVAL = 600.0
#: Worker slots assumed while no live worker is registered on the queue (and none ever was, for this dispatcher).
FALLBACK_SLOTS = 2
#: Seconds a read of the worker registry is reused for planning.
REGISTRY_CACHE = 2.0
#: Leases (instance, token, epoch) remembered as seen in the dispatcher's Redis: one check per run, not per
#: superstep, while up to this many runs go through the dispatcher at once.
VERIFIED_KEPT = 4096


@dataclass(slots=True, frozen=True)
class TaskCopy:
    """One task copy as it is handed to the packer: its payload, what Flower shows of it, its trace context."""

    payload: bytes
    summary: str
    traceparent: str | None = None


#: Copies a pack's summary names at most (the rest are counted).
PACK_SUMMARY_COPIES = 8


def pack_summary(pack: list[TaskCopy]) -> str:
    """A pack's ``argsrepr``: how many copies, and the first ones' summaries."""
    shown = ", ".join(copy.summary for copy in pack[:PACK_SUMMARY_COPIES])
    more = f", ... {len(pack) - PACK_SUMMARY_COPIES} more" if len(pack) > PACK_SUMMARY_COPIES else ""
    return f"[{len(pack)} copies: {shown}{more}]"


def task_summaries(work: SuperstepWork, groups: list[list[ExecutorBatch]]) -> list[str]:
    """What Flower and ``celery events`` show as each task's arguments (its payload is msgpack bytes):
    ``(workflow='w', instance='i', superstep=3, task=0, executors=['a', 'b'], deliveries=12)``."""
    return [
        f"(workflow={work.workflow_name!r}, instance={work.instance_id!r}, superstep={work.superstep}, "
        f"task={task}, executors={[batch.executor_id for batch in group]!r}, "
        f"deliveries={sum(len(batch.deliveries) for batch in group)})"
        for task, group in enumerate(groups)
    ]


def plan_tasks(batches: list[ExecutorBatch], k: int) -> list[list[ExecutorBatch]]:
    """Pack whole executor batches into ``k`` tasks of about equal delivery counts (largest first).

    Inside a task the batches keep the superstep's order (by their first delivery).
    """
    k = max(1, min(k, len(batches)))
    if k == len(batches):
        return [[batch] for batch in batches]
    loads = [(0, task) for task in range(k)]
    tasks: list[list[ExecutorBatch]] = [[] for _ in range(k)]
    for batch in sorted(batches, key=lambda b: len(b.deliveries), reverse=True):
        load, task = heapq.heappop(loads)
        tasks[task].append(batch)
        heapq.heappush(loads, (load + len(batch.deliveries), task))
    for group in tasks:
        group.sort(key=lambda b: b.deliveries[0][0])
    return [group for group in tasks if group]


class CeleryDispatcher(Dispatcher):
    """Runs supersteps on Celery workers. See the module docstring for the protocol and the Redis options.

    ``app``: the Celery app (default ``barrierflow.workers.app.app``). ``queue``: where tasks go (default the app's
    ``task_default_queue``, i.e. ``BARRIERFLOW_QUEUE``). ``slots``: worker processes consuming the queue
    (default ``BARRIERFLOW_WORKER_SLOTS``, else the live workers' pool sizes in the registry: ``live_workers``).
    ``tasks_per_slot``:
    tasks planned per slot, so uneven batches still balance. ``min_task_deliveries``: a task carries at least
    this many deliveries when there are enough (bounds per-task overhead). ``batch_size``: when set, deliveries
    per task instead of the slot-based plan. ``redispatch_after``: seconds between checks of the tasks without
    a result (a dead worker's task is re-sent at a check; a queued one never is, and the caller is warned);
    it bounds neither handler time nor queue time. ``claim_ttl``: how soon a dead worker's claim lapses.
    ``max_attempts``: sends of one task whose workers keep dying before the superstep fails with
    ``WorkflowError`` (``None``: no limit); the instance stays at the last barrier and ``run()`` retries it.
    ``result_ttl``: seconds the result records live at most (they are deleted once the superstep is
    collected). ``pack_size``: tasks of several runs sent in one Celery message at most (default
    ``BARRIERFLOW_PACK_SIZE``, 64; 1 sends every task alone; see ``workers/packing.py``). Lifecycle:
    ``async with`` or ``aclose()`` closes the Redis connections it opened itself.
    """

    def __init__(
        self,
        app: Celery | None = None,
        *,
        store: RedisStore | None = None,
        redis: Redis | None = None,
        redis_url: str | None = None,
        prefix: str | None = None,
        queue: str | None = None,
        slots: int | None = None,
        tasks_per_slot: int = 2,
        min_task_deliveries: int = 8,
        batch_size: int | None = None,
        redispatch_after: float = 30.0,
        claim_ttl: float = 10.0,
        max_attempts: int | None = 5,
        result_ttl: float = 3600.0,
        pack_size: int | None = None,
    ) -> None:
        if app is None:
            from .app import app as default_app

            app = default_app
        if sum(x is not None for x in (store, redis, redis_url)) > 1:
            raise ValueError("pass at most one of store=, redis= and redis_url=")
        if min(redispatch_after, claim_ttl, result_ttl) <= 0:
            raise ValueError("redispatch_after, claim_ttl and result_ttl must be positive seconds")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of deliveries, not {batch_size!r}")
        conf = app.conf
        self.app = app
        self.queue = queue or conf.task_default_queue
        self.prefix = prefix or (store.prefix if store is not None else None)
        self.prefix = self.prefix or conf.get("barrierflow_prefix") or DEFAULT_PREFIX
        self._store = store
        self._client = redis  # with a store, its client of the running loop is asked for each superstep
        self._url = redis_url or conf.get("barrierflow_redis_url") or DEFAULT_REDIS_URL
        self._owned: PerLoop[Redis] = PerLoop(lambda: async_client(self._url, RedisOptions()), _close_client)
        self.slots = slots if slots is not None else conf.get("barrierflow_worker_slots")
        self.tasks_per_slot = max(1, tasks_per_slot)
        self.min_task_deliveries = max(1, min_task_deliveries)
        self.batch_size = batch_size
        self.redispatch_after = redispatch_after
        self.claim_ttl = claim_ttl
        self.max_attempts = max_attempts
        self.result_ttl = result_ttl
        self._verified: dict[tuple[str, str, int], None] = {}  # (instance, token, epoch) seen, oldest first
        self.registry_prefix = conf.get("barrierflow_prefix") or DEFAULT_PREFIX
        self._live: tuple[float, list[WorkerEntry]] | None = None  # (when, workers) of the last registry read
        self._last_slots = 0
        self.pack_size = max(1, pack_size or conf.get("barrierflow_pack_size") or DEFAULT_PACK_SIZE)
        self._packers: PerLoop[Packer[TaskCopy]] = PerLoop(
            lambda: Packer(self._publish, self._pack_count, self.pack_size), _forget
        )
        self._batchers: PerLoop[ScriptBatcher] = PerLoop(lambda: results_batcher(self._redis), _forget)

    # -- connections -------------------------------------------------------------------------------------

    def _waiting(self) -> Redis:
        """The client for the notify list's ``BRPOP``: the store's pool for blocking waits, when there is one."""
        if self._store is not None:
            return self._store.blocking_client
        return self._redis()

    def _redis(self) -> Redis:
        if self._store is not None:
            return self._store.client
        if self._client is not None:
            return self._client
        return self._owned.get()  # one per event loop (broker/per_loop.py)

    async def aclose(self) -> None:
        """Close the connections this dispatcher opened in the running loop (a store's are the store's)."""
        await self._packers.aclose()
        await self._batchers.aclose()
        await self._owned.aclose()

    async def __aenter__(self) -> CeleryDispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- planning ----------------------------------------------------------------------------------------

    async def worker_slots(self) -> int:
        """Slots to plan for: as configured, else the pool sizes of the live workers on the queue, from the
        worker registry (``live_workers``), else the last sum seen, else ``FALLBACK_SLOTS``."""
        if self.slots:
            return int(self.slots)
        slots = sum(worker.slots for worker in await self.live_workers())
        if slots:
            self._last_slots = slots
        return slots or self._last_slots or FALLBACK_SLOTS

    async def live_workers(self, *, fresh: bool = False) -> list[WorkerEntry]:
        """The live workers consuming the queue, as the worker registry says (``broker/worker_registry.py``).

        One round trip to the store's Redis, cached ``REGISTRY_CACHE`` seconds (``fresh``: read now). Nothing
        is broadcast to the workers: replies to a broadcast leave keys without a TTL in the broker's Redis.
        The registry is read under the workers' prefix, the app's ``barrierflow_prefix``
        (``BARRIERFLOW_PREFIX``), where the workers of this app register. A failed read is logged and
        counts as the last answer (or none); the superstep's own Redis calls then report the outage.
        """
        now = time.monotonic()
        if not fresh and self._live is not None and now - self._live[0] < REGISTRY_CACHE:
            return self._live[1]
        try:
            workers = await WorkerRegistry(self._redis(), self.registry_prefix).live(self.queue)
        except Exception as exc:
            logger.warning("could not read the worker registry of queue %r: %s", self.queue, exc)
            return self._live[1] if self._live is not None else []
        self._live = (now, workers)
        return workers

    async def plan(self, batches: list[ExecutorBatch]) -> list[list[ExecutorBatch]]:
        deliveries = sum(len(b.deliveries) for b in batches)
        if self.batch_size is not None:
            k = math.ceil(deliveries / self.batch_size)
        elif len(batches) == 1:
            k = 1
        else:
            k = await self.worker_slots() * self.tasks_per_slot
            k = min(k, math.ceil(deliveries / self.min_task_deliveries))
        return plan_tasks(batches, k)

    # -- one superstep -----------------------------------------------------------------------------------

    async def run_superstep(
        self, executors: Mapping[str, Executor], work: SuperstepWork, emit: EventSink
    ) -> SuperstepResult:
        reader = ResultReader(self._redis(), self._waiting(), self._batchers.get())
        keys = ResultKeys(self.prefix, work.instance_id, work.run_id, work.epoch, work.superstep)
        await self._check_lease_visible(reader, keys, work)
        groups = await self.plan(work.batches)
        step = _Sent(work, keys, self._envelopes(work, groups), emit, task_summaries(work, groups))
        await self._send(step, range(len(step.envelopes)))
        step.start(time.monotonic(), self.redispatch_after)
        pending = set(range(len(step.envelopes)))
        result = SuperstepResult()
        try:
            while pending:
                now = time.monotonic()
                due = min(step.check_at[t] for t in pending)
                if due <= now:
                    overdue = sorted(t for t in pending if step.check_at[t] <= now)
                    finished, ready = await self._check(reader, step, overdue, now)
                else:
                    finished = [t for t in await reader.wait(keys, due - now, len(pending)) if t in pending]
                    if finished and len(set(finished)) == len(pending):  # the last ones: read and clean up
                        token = work.lease_token
                        every = range(len(step.envelopes))
                        ready = await reader.collect(keys, finished, every, token, self.result_ttl)
                        step.collected = all(blob is not None for blob in ready)
                    else:
                        ready = await reader.fetch(keys, finished)
                for task, blob in zip(finished, ready, strict=True):
                    if blob is None:  # deleted under us (cannot happen while we hold the lease): check it
                        step.check_at[task] = 0.0
                        continue
                    pending.discard(task)
                    if self._collect(decode_result(blob), result, emit):
                        return result
            return result
        finally:
            current = asyncio.current_task()
            cancelled = current is not None and current.cancelling()  # then the records expire by their TTL
            if not step.collected and not cancelled:
                await self._discard(reader, step)

    async def _check(
        self, reader: ResultReader, step: _Sent, overdue: list[int], now: float
    ) -> tuple[list[int], list[bytes]]:
        """Look at tasks without a result at their check time; re-send what a dead worker left. Returns the
        tasks found finished (a wake-up lost with a connection) and their records."""
        work = step.work
        holds, progress = await reader.progress(step.keys, overdue, work.lease_token, work.epoch)
        if not holds:  # expired, or taken: whatever the workers write now is refused
            raise ReservationLostError(
                f"the lease on {work.instance_id!r} (epoch {work.epoch}) ended while superstep "
                f"{work.superstep} was running on the workers; nothing of it was committed"
            )
        finished, ready, died, queued = [], [], [], []
        for task, seen in zip(overdue, progress, strict=True):
            if seen.result is not None:
                finished.append(task)
                ready.append(seen.result)
            elif seen.running or seen.started < step.sends[task]:  # running, or its latest copy is queued
                step.check_at[task] = now + self.redispatch_after
                if not seen.running:
                    queued.append(task)
            else:  # picked up, claim lapsed, no result: its worker died
                died.append(task)
        if died:
            await self._resend(step, died, now)
        if queued:
            await self._warn_queued(step, queued, now)
        return finished, ready

    async def _resend(self, step: _Sent, died: list[int], now: float) -> None:
        work = step.work
        if self.max_attempts is not None and any(step.sends[t] >= self.max_attempts for t in died):
            raise WorkflowError(
                f"task(s) {died} of superstep {work.superstep} of {work.instance_id!r} were sent "
                f"{self.max_attempts} times and every worker that took them died before writing a result "
                "(claim lapsed): a handler may be killing its worker process (out of memory, a crash in native "
                "code); the instance stays at its last barrier"
            )
        for task in died:
            step.sends[task] += 1
            backoff = self.redispatch_after * 2 ** (step.sends[task] - 1)
            step.check_at[task] = now + min(backoff, max(MAX_CHECK_INTERVAL, self.redispatch_after))
        logger.warning(
            "superstep %d of %r: the workers running task(s) %s died (claim lapsed, no result); sending "
            "them again (sends: %s)",
            work.superstep,
            work.instance_id,
            died,
            [step.sends[t] for t in died],
        )
        for task in died:  # the copy's number travels in its envelope (picked up vs queued)
            step.envelopes[task].send = step.sends[task]
        await self._send(step, died)

    async def _warn_queued(self, step: _Sent, queued: list[int], now: float) -> None:
        """Tell the caller that tasks wait in the queue, after 1, 2, 4... check intervals (never re-sent), and
        why, from the worker registry: no live worker consumes the queue, or its workers are all busy."""
        waited = now - step.sent_at
        if waited < step.warn_after:
            return
        step.warn_after = 2 * waited
        work = step.work
        workers = await self.live_workers(fresh=True)
        slots = sum(worker.slots for worker in workers)
        if workers:
            why = (
                f"its {len(workers)} live worker(s) ({slots} slot(s)) are busy with other tasks and take these "
                "when a slot frees up; more workers share the load"
            )
        else:
            why = (
                f"no live worker consumes it (worker registry under prefix {self.registry_prefix!r} in Redis "
                f"{self._where()}); start one (barrierflow worker --queue {self.queue} --import MODULE)"
            )
        message = (
            f"no worker has taken task(s) {queued} of superstep {work.superstep} of {work.instance_id!r} from "
            f"queue {self.queue!r} in {waited:.1f} s: {why}; the tasks stay queued, the run goes on waiting "
            "while it holds its lease"
        )
        logger.warning(message)
        step.emit(
            WorkflowEvent(
                EventType.WARNING,
                message,
                superstep=work.superstep,
                details={
                    "queue": self.queue,
                    "tasks": queued,
                    "waited": round(waited, 1),
                    "live_workers": len(workers),
                    "slots": slots,
                },
            )
        )

    async def _discard(self, reader: ResultReader, step: _Sent) -> None:
        """Delete the superstep's records and mark it collected; a failure is logged, never raised over the
        run's outcome (the records expire by their TTL)."""
        try:
            await reader.discard(
                step.keys, range(len(step.envelopes)), step.work.lease_token, self.result_ttl
            )
        except Exception as exc:
            logger.warning(
                "could not delete the records of superstep %d of %r (they expire in %g s): %s: %s",
                step.work.superstep,
                step.work.instance_id,
                self.result_ttl,
                type(exc).__name__,
                exc,
            )

    def _collect(self, task: TaskResult, result: SuperstepResult, emit: EventSink) -> bool:
        """Take one task's result; ``True`` when it stops the superstep (a handler failed)."""
        if task.refused is not None:
            error_type, message = task.refused
            raise _REFUSALS.get(error_type, WorkflowError)(
                message if error_type in _REFUSALS else f"worker {task.worker}: {error_type}: {message}"
            )
        for event in task.events:
            emit(event)
        result.outcomes.extend(task.outcomes)
        if task.failure is not None:
            result.failure = task.failure
            return True
        return False

    def _envelopes(self, work: SuperstepWork, groups: list[list[ExecutorBatch]]) -> list[TaskEnvelope]:
        shared = codec.encode(work.shared_state)
        states = work.executor_states
        envelopes = []
        for task, group in enumerate(groups):
            group_states = {b.executor_id: states[b.executor_id] for b in group if b.executor_id in states}
            envelope = TaskEnvelope(
                workflow=work.workflow_name,
                signature=work.graph_signature,
                instance_id=work.instance_id,
                run_id=work.run_id,
                epoch=work.epoch,
                token=work.lease_token,
                superstep=work.superstep,
                task=task,
                prefix=self.prefix,
                result_ttl=self.result_ttl,
                claim_ttl=self.claim_ttl,
                body=encode_body(group, group_states),
                shared=shared,
            )
            envelopes.append(envelope)
        return envelopes

    async def _send(self, step: _Sent, tasks: Iterable[int]) -> None:
        """Publish ``tasks`` of ``step``, packed with the copies of other runs ready now (``workers/packing.py``).

        Each copy travels with a readable summary for Flower and ``celery events`` (the payload is opaque
        bytes) and, when tracing is on, the superstep span's ``traceparent`` (the worker's ``barrierflow.deliver``
        spans are its children)."""
        trace = step.work.trace
        header = trace.traceparent() if trace is not None else None
        copies = [TaskCopy(encode_task(step.envelopes[t]), step.summaries[t], header) for t in tasks]
        await self._packers.get().send(copies)

    async def _pack_count(self) -> int:
        """Packs to make of the copies ready together: enough to keep every worker slot busy."""
        return await self.worker_slots() * self.tasks_per_slot

    def _publish(self, packs: list[list[TaskCopy]]) -> None:
        """Send each pack (in a thread): a pack of one as the plain single task, a bigger one as a pack task.

        A single task's trace context is the W3C ``traceparent`` header; a pack's is the list of its copies'
        (``TRACEPARENTS``), and its summary lists its copies'."""
        app = self.app
        with app.producer_or_acquire() as producer:
            for pack in packs:
                if len(pack) == 1:
                    [copy] = pack
                    name, args, summary = TASK_NAME, (copy.payload,), copy.summary
                    headers = {TRACEPARENT: copy.traceparent} if copy.traceparent else None
                else:
                    name, args = PACK_TASK_NAME, ([copy.payload for copy in pack],)
                    summary = pack_summary(pack)
                    traced = [copy.traceparent for copy in pack]
                    headers = {TRACEPARENTS: traced} if any(traced) else None
                app.send_task(
                    name,
                    args=args,
                    queue=self.queue,
                    serializer="msgpack",
                    ignore_result=True,
                    producer=producer,
                    argsrepr=summary,
                    kwargsrepr="{}",
                    headers=headers,
                )

    async def _check_lease_visible(self, reader: ResultReader, keys: ResultKeys, work: SuperstepWork) -> None:
        """Once per run: do the workers' records land next to this run's lease? Otherwise they are fenced."""
        seen = (work.instance_id, work.lease_token, work.epoch)
        if seen in self._verified:
            return
        if not await reader.lease_holds(keys, work.lease_token, work.epoch):
            if self._store is not None:
                raise ReservationLostError(
                    f"the lease on {work.instance_id!r} (epoch {work.epoch}) ended before superstep "
                    f"{work.superstep} was sent to the workers"
                )
            raise WorkflowError(
                f"CeleryDispatcher does not see the reservation of {work.instance_id!r} in Redis {self._where()} "
                f"under prefix {self.prefix!r}, so every worker result would be refused: run the workflow on a "
                "broker.RedisStore and build the dispatcher with CeleryDispatcher(app, store=that_store), or "
                "make BARRIERFLOW_REDIS_URL / BARRIERFLOW_PREFIX match the store's"
            )
        self._verified[seen] = None
        if len(self._verified) > VERIFIED_KEPT:
            del self._verified[next(iter(self._verified))]

    def _where(self) -> str:
        client = self._store.client if self._store is not None else self._client
        if client is not None:
            kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
            return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        return self._url


async def _close_client(client: Redis) -> None:
    await client.aclose()


async def _forget(value: object) -> None:
    """Packers and batchers hold no connection of their own (they use the app's producer pool, the client)."""


@dataclass(slots=True)
class _Sent:
    """One superstep on the workers: its task envelopes, sends per task, when to check each, when to warn."""

    work: SuperstepWork
    keys: ResultKeys
    envelopes: list[TaskEnvelope]
    emit: EventSink
    summaries: list[str]  # each task's argsrepr
    sends: list[int] = field(default_factory=list)
    check_at: list[float] = field(default_factory=list)
    sent_at: float = 0.0
    warn_after: float = 0.0
    collected: bool = False  # its keys were deleted with its last results (no discard needed)

    def start(self, now: float, interval: float) -> None:
        self.sends = [1] * len(self.envelopes)
        self.check_at = [now + interval] * len(self.envelopes)
        self.sent_at, self.warn_after = now, interval
