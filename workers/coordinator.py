"""``Coordinator``: a service that takes runs from the ``RunQueue`` and drives many of them at once.

``await Coordinator(store).serve()`` runs until SIGTERM/SIGINT (or ``await coordinator.stop()``). Start as many
as you like, anywhere: they share the work through the queue's consumer group. With ``dispatcher=None`` the
handlers run in this process (``LocalDispatcher``); with a ``CeleryDispatcher`` they run on Celery workers.

**Slots.** A slot is one instance taken from the ready stream, driven under one lease: its queued runs one
after another (``rq_finish.lua`` starts the next under the same lease). Up to ``concurrency`` slots run at
once on one event loop; free slots are filled in batches (``XREADGROUP COUNT n``, n up to ``claim_batch``). Each run executes as a
hosted ``Workflow`` run (``engine/run_control.py``) over a ``RunJournal`` (``broker/run_journal.py``), which
writes its checkpoints and its events to Redis together.

**Takeover.** Timeline of a coordinator killed with runs in flight (``lock_ttl`` = 30 s):

- t=0   coordinator A heartbeats: ``XCLAIM ... JUSTID`` of its entries (idle time back to 0) and renews its
        leases, in one round trip; it does so every 10 s;
- t=4   A is SIGKILLed; its entries stay pending in the group, its leases stop being renewed;
- t≤34  A's leases have expired (renewed at the latest at t=4, for 30 s);
- t≥34  B's sweep (every ``sweep_interval``) finds A's entries idle more than ``lock_ttl`` + ``sweep_margin``
        and claims them (``XAUTOCLAIM``); ``rq_start.lua`` takes each instance's lease and its run, counting a
        crash (``attempts`` + 1). The run resumes from its latest checkpoint: if that attempt committed a
        checkpoint, the queued work of the instance continues (the superstep A was in is run again: handlers
        are at-least-once); otherwise the run starts from its submitted input.
- A run whose coordinators died ``max_attempts`` times is failed with that reason instead.

An entry is idle longer than the lease TTL only if its heartbeat stopped that long ago, and the lease renewals
stopped at the same time (same round trip), so the lease has expired by then; if a lease is still held anyway
(a paused coordinator, or a ``run()`` outside the queue), ``rq_start.lua`` says so and the sweeper backs off
until the entry is idle again. A coordinator that was only paused finds its leases gone on waking: its next
write is fenced out and it drops those runs without recording anything (they are the new holder's now).

**Stopping** (SIGTERM, SIGINT, ``stop()``): take nothing new; ask every run to stop at its next barrier and
hand it back (queued again at the head of its instance's FIFO, under a fresh ready entry, so another
coordinator continues it at once); runs still inside a superstep ``stop_margin`` seconds before
``shutdown_grace`` ends are abandoned there (the instance stays at the last barrier) and handed back. A second
signal abandons at once. **Cancel**: a notice on ``P:rq:cancel`` abandons the run's superstep in flight
promptly, or stops it at the barrier being written; the run ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from barrierflow.broker.connection import blocking_limit
from barrierflow.broker.coordinator_queue import Claim, ClaimedRun, CoordinatorQueue
from barrierflow.broker.redis_store import RedisStore
from barrierflow.broker.run_journal import RunJournal
from barrierflow.broker.run_queue import RunQueue
from barrierflow.broker.run_records import CANCELLED, COMPLETED, FAILED, error_record
from barrierflow.broker.run_waiters import Subscription
from barrierflow.engine.dispatch import Dispatcher, LocalDispatcher
from barrierflow.engine.errors import (
    GraphSignatureMismatchError,
    ReservationLostError,
    RunCancelledError,
    WorkflowError,
)
from barrierflow.engine.events import EventType, RunState, WorkflowEvent
from barrierflow.engine.registry import workflow_graph
from barrierflow.engine.run_control import RunControl
from barrierflow.engine.run_session import WorkflowStream
from barrierflow.engine.store import new_token
from barrierflow.engine.workflow import Workflow

logger = logging.getLogger("barrierflow.coordinator")

HANDBACK, CANCEL, LOST = "handback", "cancel", "lost"


@dataclass(slots=True)
class Ending:
    """How a run ended, for ``rq_finish.lua`` (``state`` is ``completed``/``failed``/``cancelled``/``handback``)."""

    state: str
    status: RunState | None = None
    outputs: list[Any] = field(default_factory=list)
    pending: dict[str, WorkflowEvent] = field(default_factory=dict)
    error: dict[str, Any] | None = None


class _Slot:
    """One instance this coordinator drives: its ready entry, lease, journal and the run in hand."""

    __slots__ = (
        "control",
        "entry_id",
        "instance_id",
        "journal",
        "lease",
        "reason",
        "run",
        "run_task",
        "task",
    )

    def __init__(self, entry_id: str, instance_id: str) -> None:
        self.entry_id = entry_id
        self.instance_id = instance_id
        self.task: asyncio.Task[None] | None = None
        self.lease: Any = None
        self.journal: RunJournal | None = None
        self.run: ClaimedRun | None = None
        self.control: RunControl | None = None
        self.run_task: asyncio.Task[Any] | None = None
        self.reason: str | None = None  # why the run in hand must stop: HANDBACK, CANCEL or LOST

    def stop(self, reason: str, *, now: bool = False) -> None:
        """Stop the run in hand at its next barrier (``now``: abandon its superstep in flight).

        A lost lease overrides everything, a cancel overrides a hand-back.
        """
        rank = {HANDBACK: 1, CANCEL: 2, LOST: 3}
        if self.reason is None or rank[reason] > rank[self.reason]:
            self.reason = reason
        if self.control is not None and self.control.stop is None:
            self.control.stop = RunCancelledError(f"run {self.control.run_id!r} stopped by its coordinator")
        if now:
            self.abandon()

    def abandon(self) -> None:
        """Cancel the superstep in flight, unless a checkpoint write is: then the run stops right after it."""
        committing = self.journal is not None and self.journal.committing
        if self.run_task is not None and not self.run_task.done() and (not committing or self.reason == LOST):
            self.run_task.cancel()


class Coordinator:
    """Takes runs from the queue and drives up to ``concurrency`` of them at once (see the module docstring).

    ``store``: the ``RedisStore`` (its ``lock_ttl`` is the lease TTL). ``dispatcher``: ``None`` runs handlers
    here; a ``CeleryDispatcher`` runs them on workers. ``max_attempts``: coordinator deaths a run survives
    before it is failed. ``shutdown_grace``: seconds ``stop()`` takes at most. ``queue``: the ``RunQueue``
    whose settings (``result_ttl``, ``events_maxlen``) results and events are written with. ``name``: this
    coordinator's consumer name (default host:pid:random). ``flush_interval``: how long live events may wait
    to be written in a batch. ``claim_batch``: instances taken per read of the queue at most.
    """

    def __init__(
        self,
        store: RedisStore,
        dispatcher: Dispatcher | None = None,
        *,
        concurrency: int = 64,
        max_attempts: int = 3,
        shutdown_grace: float = 30.0,
        queue: RunQueue | None = None,
        name: str | None = None,
        flush_interval: float = 0.05,
        read_block: float = 1.0,
        sweep_interval: float = 1.0,
        sweep_margin: float = 0.5,
        claim_batch: int = 16,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if shutdown_grace <= 0 or flush_interval <= 0 or read_block <= 0 or sweep_interval <= 0:
            raise ValueError("shutdown_grace, flush_interval, read_block and sweep_interval must be positive")
        self.store = store
        self.dispatcher = dispatcher if dispatcher is not None else LocalDispatcher()
        self._owns_queue = queue is None
        self.queue = queue if queue is not None else RunQueue(store)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.shutdown_grace = shutdown_grace
        self.flush_interval = flush_interval
        self.read_block = read_block
        self.sweep_interval = sweep_interval
        self.sweep_margin = sweep_margin
        self.claim_batch = max(1, claim_batch)
        self._side = CoordinatorQueue(self.queue, self.name)
        self._slots: dict[str, _Slot] = {}
        self._stopping = False
        self._stop_requested: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self._dirty: set[RunJournal] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: the last time this coordinator completed a loop of its intake (for health checks)
        self.alive_at = time.time()

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Instances (slots) this coordinator is driving now."""
        return len(self._slots)

    async def __aenter__(self) -> Coordinator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving (handing runs back) and close what this coordinator opened."""
        await self.stop()
        if self._owns_queue:
            await self.queue.aclose()

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler); a second request abandons supersteps at once."""
        if self._stop_requested is None:
            return
        if self._stop_requested.is_set():
            for slot in list(self._slots.values()):
                slot.stop(HANDBACK, now=True)
            return
        self._stopping = True
        self._stop_requested.set()
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        """Stop taking runs, hand the runs in flight back at a barrier, and return once ``serve()`` ended."""
        self.request_stop()
        if self._done is not None:
            await self._done.wait()

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Take and drive runs until stopped (SIGTERM or SIGINT when ``handle_signals``, or ``stop()``)."""
        if self._done is not None and not self._done.is_set():
            raise RuntimeError(f"coordinator {self.name} is already serving")
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._stop_requested, self._wake, self._done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        signals = self._install_signals(loop) if handle_signals else []
        helpers: list[asyncio.Task[Any]] = []
        try:
            await self._side.ensure_group()
            waiting = self.store.blocking_client
            cancels = Subscription(
                waiting,
                self.queue.cancel_channel,
                self._on_cancel,
                idle_timeout=min(self.read_block, blocking_limit(waiting)),
            )
            helpers = [asyncio.ensure_future(self._intake()), asyncio.ensure_future(self._heartbeat())]
            await cancels.ready()
            logger.info("coordinator %s serving (concurrency %d)", self.name, self.concurrency)
            stopping = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait([stopping, *helpers], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            failed = next((t for t in helpers if t.done() and not t.cancelled() and t.exception()), None)
            self._stopping = True
            await self._hand_back_all(helpers[0])
            await cancels.aclose()
            if failed is not None:  # a bug, not a Redis outage (those are retried): stop loudly
                raise failed.exception()  # type: ignore[misc]
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for sig in signals:
                loop.remove_signal_handler(sig)
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._done.set()
            logger.info("coordinator %s stopped", self.name)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                continue
            installed.append(sig)
        return installed

    async def _hand_back_all(self, intake: asyncio.Task[None]) -> None:
        """Stop every run at its next barrier and hand it back, within ``shutdown_grace``.

        The intake ends first: its last read of the queue may still be blocked in Redis, and a run handed back
        under a fresh ready entry would be delivered to that read. Cancelled after the delivery, the read would
        leave the entry in this leaving consumer's pending list, where only a sweep finds it a lease TTL later;
        ended normally, the intake gives back what it read.
        """
        deadline = time.monotonic() + self.shutdown_grace
        margin = min(5.0, self.shutdown_grace / 4)
        for slot in list(self._slots.values()):
            slot.stop(HANDBACK)
        if not intake.done():
            await asyncio.wait([intake], timeout=max(0.1, deadline - margin - time.monotonic()))
        drivers = [s.task for s in self._slots.values() if s.task is not None]
        if drivers:
            await asyncio.wait(drivers, timeout=max(0.0, deadline - margin - time.monotonic()))
        for slot in list(self._slots.values()):  # still inside a superstep: abandon it, the state stays
            slot.abandon()
        drivers = [s.task for s in self._slots.values() if s.task is not None]
        if drivers:
            _, late = await asyncio.wait(drivers, timeout=max(0.1, deadline - time.monotonic()))
            for task in late:  # could not even hand back in time: the lease expires, a sweep takes it over
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    # -- taking work -----------------------------------------------------------------------------------------

    async def _intake(self) -> None:
        """Fill free slots: swept entries of dead coordinators first, then new ready entries."""
        side, cursor, failures = self._side, "0-0", 0
        ttl_ms = int(self.store.lock_ttl * 1000)
        min_idle = ttl_ms + int(self.sweep_margin * 1000)
        next_sweep = next_reap = 0.0
        assert self._wake is not None
        while not self._stopping:
            self.alive_at = time.time()
            # at most claim_batch per read: a burst of submissions spreads over the coordinators instead of
            # filling the first one that reads (the others read in between)
            free = min(self.concurrency - len(self._slots), self.claim_batch)
            if free <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                now = time.monotonic()
                if now >= next_reap:
                    next_reap = now + max(60.0, 10 * self.store.lock_ttl)
                    await side.reap(10 * ttl_ms + 60_000)
                if now >= next_sweep:
                    cursor, swept = await side.sweep(min_idle, free, cursor)
                    if swept:  # a dead coordinator's entries: take them all, batch after batch, at once
                        self._take(swept, swept=True)
                        continue
                    next_sweep = now + self.sweep_interval
                entries = await side.read(free, self.read_block)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                logger.warning(
                    "coordinator %s: reading the queue failed: %s: %s", self.name, type(exc).__name__, exc
                )
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if self._stopping:  # read while stopping: give them back for another coordinator
                for entry_id, instance_id in entries:
                    with contextlib.suppress(RedisError, OSError):
                        await side.requeue(entry_id, instance_id)
                return
            self._take(entries)

    def _take(self, entries: list[tuple[str, str]], *, swept: bool = False) -> None:
        for entry_id, instance_id in entries:
            if entry_id in self._slots:  # our own entry, late in its heartbeat: still ours
                continue
            slot = self._slots[entry_id] = _Slot(entry_id, instance_id)
            slot.task = asyncio.ensure_future(self._drive(slot, swept))

    async def _heartbeat(self) -> None:
        """Every third of the lease TTL: reset our entries' idle time and renew our leases, in one round trip."""
        every = self.store.lock_ttl / 3
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(every)
            slots = list(self._slots.values())
            leased = [s for s in slots if s.lease is not None and not s.lease.lost]
            try:
                held = await self._side.heartbeat([s.entry_id for s in slots], [s.lease for s in leased])
                last_ok = time.monotonic()
            except (RedisError, OSError) as exc:
                logger.warning("coordinator %s: heartbeat failed: %s: %s", self.name, type(exc).__name__, exc)
                if time.monotonic() - last_ok < self.store.lock_ttl:
                    continue
                held = [False] * len(leased)  # a whole TTL without renewal: the leases may be gone
            for slot, ok in zip(leased, held, strict=True):
                if not ok:
                    slot.lease.lost = True
                    slot.stop(LOST, now=True)

    def _on_cancel(self, run_id: str) -> None:
        for slot in self._slots.values():
            if slot.run is not None and slot.run.run_id == run_id:
                slot.stop(CANCEL, now=True)

    # -- driving an instance ---------------------------------------------------------------------------------

    async def _drive(self, slot: _Slot, swept: bool) -> None:
        """Take the instance, then run its queued runs one after another under one lease."""
        try:
            claim = await self._side.start(slot.entry_id, slot.instance_id, new_token(), self.store.lock_ttl)
            if claim.run is None:
                if claim.busy is not None:
                    logger.info(
                        "instance %s is held by %s: leaving it until its lease ends",
                        slot.instance_id,
                        claim.busy,
                    )
                return
            await self._drive_runs(slot, claim)
        except Exception:
            logger.exception("coordinator %s: driving instance %s failed", self.name, slot.instance_id)
        finally:
            self._slots.pop(slot.entry_id, None)
            if self._wake is not None:
                self._wake.set()

    async def _drive_runs(self, slot: _Slot, claim: Claim) -> None:
        assert claim.run is not None and claim.lease is not None
        slot.lease = claim.lease
        journal = slot.journal = RunJournal(self.queue, claim.lease, claim.prefetched, self._live)
        run: ClaimedRun | None = claim.run
        wf: Workflow | None = None
        while run is not None:
            if self._stopping:
                slot.stop(HANDBACK)
            slot.run = run
            journal.begin(run.run_hex)
            logger.info("run %s (%s) started, attempt %d", run.run_id, run.workflow, run.attempts)
            wf, ending = await self._execute(slot, run, wf)
            if ending is None:  # the lease ended: the run is another coordinator's now
                logger.warning(
                    "run %s: lost the lease of %s; another coordinator has it", run.run_id, run.instance_id
                )
                return
            slot.reason, slot.run = None, None
            go_on = not self._stopping and ending.state != "handback"
            following = await self._side.finish(
                journal,
                run,
                ending.state,
                status=ending.status,
                outputs=ending.outputs,
                pending=ending.pending,
                error=ending.error,
                go_on=go_on,
            )
            logger.info(
                "run %s %s", run.run_id, "handed back" if ending.state == "handback" else ending.state
            )
            if following is False:
                logger.warning(
                    "run %s: lost the lease of %s before recording it", run.run_id, run.instance_id
                )
                return
            run = following or None

    async def _execute(
        self, slot: _Slot, run: ClaimedRun, wf: Workflow | None
    ) -> tuple[Workflow | None, Ending | None]:
        """Run one queued run to its end; ``(handle to reuse, how it ended)``, ``None`` if the lease ended."""
        if run.cancel_requested or slot.reason == CANCEL:
            return wf, Ending(CANCELLED, error=error_record(RunCancelledError("cancelled before it started")))
        if slot.reason == HANDBACK:
            return wf, Ending("handback")
        if run.crashes >= self.max_attempts:
            return wf, Ending(
                FAILED,
                error=error_record(
                    WorkflowError(
                        f"run {run.run_id!r} was taken over {run.crashes} times from coordinators that died while "
                        f"running it (max_attempts={self.max_attempts}); it is failed instead of retried again"
                    )
                ),
            )
        try:
            graph = workflow_graph(run.workflow)
            if run.signature and run.signature != graph.signature:
                raise GraphSignatureMismatchError(
                    f"workflow {run.workflow!r}: run {run.run_id!r} was submitted for graph signature "
                    f"{run.signature!r}, but coordinator {self.name} has {graph.signature!r}; deploy one "
                    "definition of the workflow to submitters and coordinators"
                )
            message, responses, checkpoint_id = (None, {}, None) if run.committed else run.message()
            outputs = await self._side.committed_outputs(run) if run.committed else []
        except Exception as exc:  # unknown workflow, other graph, undecodable input
            return wf, Ending(FAILED, error=error_record(exc))
        if wf is None or wf.graph is not graph:
            assert slot.journal is not None
            wf = Workflow(graph, instance_id=run.instance_id, store=slot.journal, dispatcher=self.dispatcher)
        control = slot.control = RunControl(run.run_id, slot.lease, resume=run.committed is not None)
        if slot.reason is not None:  # a stop came while the run was being prepared
            slot.stop(slot.reason)
        assert slot.journal is not None
        slot.journal.on_cancel = lambda: slot.stop(CANCEL)
        stream = wf.hosted_stream(control, message, responses=responses or None, checkpoint_id=checkpoint_id)
        slot.run_task = asyncio.ensure_future(self._consume(stream, slot.journal, run, outputs))
        try:
            result = await slot.run_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if slot.reason is None or (current is not None and current.cancelling()):
                raise  # this coordinator itself is being cancelled
            return wf, self._stopped(slot, wf, outputs)
        except RunCancelledError:
            return wf, self._stopped(slot, wf, outputs)
        except ReservationLostError:
            return wf, None
        except Exception as exc:
            if slot.reason == LOST:
                return wf, None
            return wf, Ending(FAILED, status=wf.status, outputs=outputs, error=error_record(exc))
        finally:
            slot.run_task = slot.control = None
        return wf, Ending(COMPLETED, result.status, outputs, dict(result.pending_requests))

    def _stopped(self, slot: _Slot, wf: Workflow, outputs: list[Any]) -> Ending | None:
        if slot.reason == LOST:
            return None
        if slot.reason == CANCEL:
            error = error_record(RunCancelledError("cancelled while running; it stopped at a barrier"))
            return Ending(CANCELLED, wf.status, outputs, error=error)
        return Ending("handback")

    async def _consume(
        self, stream: WorkflowStream, journal: RunJournal, run: ClaimedRun, outputs: list[Any]
    ) -> Any:
        """Iterate the run: committed events are in the stream already; live ones go to the journal."""
        # a later attempt says so (a takeover or hand-back: the superstep it resumes at runs again)
        details = {"attempt": run.attempts} if run.attempts > 1 else None
        async for event in stream:
            if event.event_id is not None:  # written with its checkpoint
                if event.type == EventType.OUTPUT:
                    outputs.append(event.data)
                continue
            if event.type == EventType.STARTED and details is not None:
                event.details = details
            journal.add_live(event)
        return await stream.result()

    # -- live events -----------------------------------------------------------------------------------------

    def _live(self, journal: RunJournal) -> None:
        """A journal has live events to write: flush every such journal together, ``flush_interval`` from now."""
        self._dirty.add(journal)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.flush_interval, self._flush_live)

    def _flush_live(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for journal in dirty:  # started in one loop turn: their calls go out as one pipeline
            self._spawn(journal.flush)

    def _spawn(self, work: Callable[[], Any]) -> None:
        task = asyncio.ensure_future(work())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
