"""``CeleryDispatcher``: the coordinator's side of distributed mode. Runs each superstep on Celery workers.

Per superstep:

1. **Plan.** The runner's executor batches (all deliveries of one executor, in order) are packed whole into
   about ``k`` tasks, ``k`` from the worker slots and the number of deliveries (never one task per message,
   never one executor split across tasks, so an executor still handles its deliveries one at a time, in
   order). The committed shared state is encoded once and rides in every task.
2. **Send** the tasks to the queue (msgpack).
3. **Barrier without chords.** Each task's worker writes a fenced, first-write-wins record and pushes the task
   number on a notify list (``broker/results.py``). This side sleeps in ``BRPOP`` until a task finishes or the
   next deadline. Every ``redispatch_after`` seconds a task without a result is sent again, unless a worker
   holds a live claim on it (it is running; the claim lapses ``claim_ttl`` after its worker dies). Before
   re-sending, this side checks that the record is not simply there and that the run still holds its lease.
4. **Return** the outcomes and the workers' live events (``emit``, in order per executor). A handler failure
   returns at once (the runner raises ``ExecutorFailedError``; the other tasks' results are discarded). The
   records and the notify list are deleted, and expire by their TTL if this process dies first.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from barrierflow.broker.per_loop import PerLoop
from barrierflow.broker.results import ResultKeys, ResultReader
from barrierflow.engine import codec
from barrierflow.engine.dispatch import Dispatcher, EventSink, ExecutorBatch, SuperstepResult, SuperstepWork
from barrierflow.engine.errors import (
    CheckpointDecodeError,
    GraphSignatureMismatchError,
    ReservationLostError,
    SerializationError,
    WorkflowError,
)
from barrierflow.engine.executor import Executor

from .config import DEFAULT_PREFIX, DEFAULT_REDIS_URL, TASK_NAME
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

#: Worker slots assumed when no worker answers the discovery broadcast.
FALLBACK_SLOTS = 2
#: Worker slots found by asking the workers, per (broker, queue): ``(slots, when)``; shared by dispatchers.
_discovered: dict[tuple[str, str], tuple[int, float]] = {}
_refreshing: dict[tuple[str, str], asyncio.Task[None]] = {}


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
    (default ``BARRIERFLOW_WORKER_SLOTS``, else asked from the workers once a minute). ``tasks_per_slot``:
    tasks planned per slot, so uneven batches still balance. ``min_task_deliveries``: a task carries at least
    this many deliveries when there are enough (bounds per-task overhead). ``batch_size``: when set, deliveries
    per task instead of the slot-based plan. ``redispatch_after``: how long a task may go without a result and
    without a running worker's claim before it is sent again: the longest a task should wait in the queue.
    It does not bound handler time (a running task's claim keeps it from being re-sent). ``claim_ttl``: how
    soon a dead worker's claim lapses. ``max_attempts``: sends of one task before the superstep fails with
    ``WorkflowError`` (no worker on the queue, an undecodable payload); the instance stays at the last
    barrier and ``run()`` retries it. ``None`` (default): keep trying while the lease holds. ``result_ttl``:
    seconds the result records live at most (they are deleted once the superstep is collected).
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
        max_attempts: int | None = None,
        result_ttl: float = 3600.0,
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
        self._owned: PerLoop[Redis] = PerLoop(lambda: Redis.from_url(self._url, socket_connect_timeout=5.0))
        self.slots = slots if slots is not None else conf.get("barrierflow_worker_slots")
        self.tasks_per_slot = max(1, tasks_per_slot)
        self.min_task_deliveries = max(1, min_task_deliveries)
        self.batch_size = batch_size
        self.redispatch_after = redispatch_after
        self.claim_ttl = claim_ttl
        self.max_attempts = max_attempts
        self.result_ttl = result_ttl
        self._verified: tuple[str, str, int] | None = None  # (instance, token, epoch) seen in this Redis

    # -- connections -------------------------------------------------------------------------------------

    def _redis(self) -> Redis:
        if self._store is not None:
            return self._store.client
        if self._client is not None:
            return self._client
        return self._owned.get()  # one per event loop (broker/per_loop.py)

    async def aclose(self) -> None:
        owned = self._owned.pop()
        if owned is not None:
            await owned.aclose()

    # -- planning ----------------------------------------------------------------------------------------

    async def worker_slots(self) -> int:
        """Slots to plan for: as configured, or the workers' pool sizes on this queue (asked once a minute)."""
        if self.slots:
            return int(self.slots)
        key = (str(self.app.conf.broker_url), self.queue)
        known = _discovered.get(key)
        if known is None:  # the first superstep of this process waits for the answer (<= 0.5 s)
            await self._discover(key)
            return _discovered[key][0]
        refreshing = _refreshing.get(key)
        if time.monotonic() - known[1] > 60.0 and (refreshing is None or refreshing.done()):
            _refreshing[key] = asyncio.get_running_loop().create_task(self._discover(key))  # never waited on
        return known[0]

    async def _discover(self, key: tuple[str, str]) -> None:
        try:
            found = await self._ask_workers()
        except Exception as exc:  # the broker is unreachable: sending will say so; plan with what we know
            logger.warning("could not ask the workers of queue %r for their slots: %s", self.queue, exc)
            found = None
        finally:
            _refreshing.pop(key, None)
        known = _discovered.get(key)
        _discovered[key] = (found or (known[0] if known else FALLBACK_SLOTS), time.monotonic())

    async def _ask_workers(self) -> int | None:
        """Sum of the pool sizes of the workers consuming our queue (two broadcasts, asked together)."""
        inspect = self.app.control.inspect(timeout=0.5)
        queues, stats = await asyncio.gather(
            asyncio.to_thread(inspect.active_queues), asyncio.to_thread(inspect.stats)
        )
        consuming = [w for w, qs in (queues or {}).items() if any(q.get("name") == self.queue for q in qs)]
        stats = stats or {}
        return sum(int(stats.get(w, {}).get("pool", {}).get("max-concurrency", 1)) for w in consuming) or None

    async def plan(self, batches: list[ExecutorBatch]) -> list[list[ExecutorBatch]]:
        deliveries = sum(len(b.deliveries) for b in batches)
        if self.batch_size is not None:
            k = math.ceil(deliveries / self.batch_size)
        elif len(batches) == 1:
            k = 1
        else:
            k = (await self.worker_slots()) * self.tasks_per_slot
            k = min(k, math.ceil(deliveries / self.min_task_deliveries))
        return plan_tasks(batches, k)

    # -- one superstep -----------------------------------------------------------------------------------

    async def run_superstep(
        self, executors: Mapping[str, Executor], work: SuperstepWork, emit: EventSink
    ) -> SuperstepResult:
        reader = ResultReader(self._redis())
        keys = ResultKeys(self.prefix, work.instance_id, work.run_id, work.epoch, work.superstep)
        await self._check_lease_visible(reader, keys, work)
        groups = await self.plan(work.batches)
        payloads = self._payloads(work, groups)
        attempts = [1] * len(payloads)
        await self._send(payloads)
        deadline = [time.monotonic() + self.redispatch_after] * len(payloads)
        pending = set(range(len(payloads)))
        result = SuperstepResult()
        try:
            while pending:
                now = time.monotonic()
                due = min(deadline[t] for t in pending)
                if due <= now:
                    overdue = sorted(t for t in pending if deadline[t] <= now)
                    blobs = await reader.fetch(keys, overdue)  # a wake-up lost with a connection?
                    missing = [t for t, blob in zip(overdue, blobs, strict=True) if blob is None]
                    running = await reader.claimed(keys, missing)
                    lost = [t for t, claimed in zip(missing, running, strict=True) if not claimed]
                    if lost:  # neither a result nor a live claim: never started, or its worker died
                        await self._redispatch(reader, keys, work, payloads, lost, attempts)
                    for task in missing:
                        deadline[task] = now + self.redispatch_after
                    finished = [t for t in overdue if t not in missing]
                    ready = [b for b in blobs if b is not None]
                else:
                    finished = [t for t in await reader.wait(keys, due - now) if t in pending]
                    ready = await reader.fetch(keys, finished)
                for task, blob in zip(finished, ready, strict=True):
                    if blob is None:  # deleted under us (cannot happen while we hold the lease); re-send
                        deadline[task] = 0.0
                        continue
                    pending.discard(task)
                    if self._collect(decode_result(blob), result, emit):
                        return result
            return result
        finally:
            current = asyncio.current_task()
            if current is None or not current.cancelling():  # cancelled: the records expire by their TTL
                await reader.discard(keys, range(len(payloads)))

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

    def _payloads(self, work: SuperstepWork, groups: list[list[ExecutorBatch]]) -> list[bytes]:
        shared = codec.encode(work.shared_state)
        states = work.executor_states
        payloads = []
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
            payloads.append(encode_task(envelope))
        return payloads

    async def _send(self, payloads: list[bytes]) -> None:
        await asyncio.to_thread(self._publish, payloads)

    def _publish(self, payloads: list[bytes]) -> None:
        app = self.app
        with app.producer_or_acquire() as producer:
            for payload in payloads:
                app.send_task(
                    TASK_NAME,
                    args=(payload,),
                    queue=self.queue,
                    serializer="msgpack",
                    ignore_result=True,
                    producer=producer,
                )

    async def _redispatch(
        self,
        reader: ResultReader,
        keys: ResultKeys,
        work: SuperstepWork,
        payloads: list[bytes],
        missing: list[int],
        attempts: list[int],
    ) -> None:
        if not await reader.lease_holds(keys, work.lease_token, work.epoch):
            raise ReservationLostError(
                f"the lease on {work.instance_id!r} (epoch {work.epoch}) ended while superstep "
                f"{work.superstep} was running on the workers; nothing of it was committed"
            )
        if self.max_attempts is not None and any(attempts[t] >= self.max_attempts for t in missing):
            raise WorkflowError(
                f"no result for task(s) {missing} of superstep {work.superstep} of {work.instance_id!r} after "
                f"{self.max_attempts} sends, {self.redispatch_after:g} s apart: are workers consuming queue "
                f"{self.queue!r} and writing to the same Redis as the store (BARRIERFLOW_REDIS_URL)?"
            )
        for task in missing:
            attempts[task] += 1
        logger.warning(
            "superstep %d of %r: no result for task(s) %s after %g s; sending them again",
            work.superstep,
            work.instance_id,
            missing,
            self.redispatch_after,
        )
        await self._send([payloads[t] for t in missing])

    async def _check_lease_visible(self, reader: ResultReader, keys: ResultKeys, work: SuperstepWork) -> None:
        """Once per run: do the workers' records land next to this run's lease? Otherwise they are fenced."""
        seen = (work.instance_id, work.lease_token, work.epoch)
        if self._verified == seen:
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
        self._verified = seen

    def _where(self) -> str:
        client = self._store.client if self._store is not None else self._client
        if client is not None:
            kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
            return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        return self._url
