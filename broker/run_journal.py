"""``RunJournal``: the store as the runs a coordinator drives on one instance see it.

A coordinator holds one lease per instance and drains that instance's queued runs one after another under it.
The ``Workflow`` it builds for them gets this view instead of the ``RedisStore``:

* **Checkpoint writes journal the run's events** (``rq_commit.lua``): the checkpoint, the live events of the
  superstep not yet flushed, and the events the barrier commits (outputs, requests, ``checkpoint_created``,
  ``superstep_completed``) are written in one fenced call. A committed output is therefore in the instance's
  stream exactly once, including when the superstep ran twice because a coordinator died in between, and a
  coordinator that takes the run over finds the outputs committed before. The reply says whether a cancel
  was requested, so stopping at the next barrier costs no round trip.
* **Live events** (``started``, ``superstep_started``, ``executor_invoked``...) are buffered and flushed by
  the coordinator in batches (``rq_events.lua``, fenced), every ``flush_interval`` or with the next commit.
  Order is kept: a commit waits for a flush in flight and carries what is still buffered before its own events.
* **Reads are mostly free.** While the lease holds, nobody else writes the instance's checkpoints, so its
  latest id is the one this view last wrote, or the one ``rq_start.lua`` returned with the claim (with its
  head and keyframe, which the first run reads at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from barrierflow.engine.checkpoint_format import CheckpointRecord
from barrierflow.engine.events import WorkflowEvent
from barrierflow.engine.store import Lease, ReservationInfo, Store

from .metrics import CHECKPOINT_BYTES
from .redis_store import RedisStore, _redis_errors, fenced_out
from .run_records import encode_event

if TYPE_CHECKING:
    from .run_queue import RunQueue

logger = logging.getLogger("barrierflow.broker")


class RunJournal(Store):
    """A ``Store`` over ``queue.store`` for the runs of one instance lease (see the module docstring)."""

    def __init__(
        self,
        queue: RunQueue,
        lease: Lease,
        prefetched: tuple[str | None, bytes | None, bytes | None],
        on_live: Callable[[RunJournal], None],
    ) -> None:
        self.queue = queue
        self.inner: RedisStore = queue.store
        self.lease = lease
        self.lock_ttl = self.inner.lock_ttl
        self.retention = self.inner.retention
        self.latest, head, keyframe = prefetched
        self._prefetched = (head, keyframe) if head is not None else None
        self._on_live = on_live
        self.run_hex = ""
        self.run_key = ""
        #: encoded live events not yet in the stream, in order
        self.pending: list[bytes] = []
        self._flushing: asyncio.Future[None] | None = None
        #: a checkpoint write is in flight (a prompt cancel must not abandon it halfway)
        self.committing = False
        #: set when ``rq_commit.lua`` reports a cancel request; the host turns it into a stop
        self.on_cancel: Callable[[], None] | None = None

    def begin(self, run_hex: str) -> None:
        """The next run under this lease: its events and checkpoints are journaled under its id from now."""
        self.run_hex = run_hex
        self.run_key = self.queue.keys.run_record(self.lease.instance_id, run_hex)

    # -- events ----------------------------------------------------------------------------------------------

    def add_live(self, event: WorkflowEvent) -> None:
        """Buffer a live event; the coordinator flushes it soon (or the next commit carries it)."""
        self.pending.append(encode_event(event, self.lease.instance_id, self.run_hex))
        if len(self.pending) == 1:
            self._on_live(self)

    async def settled(self) -> None:
        """Wait for a flush in flight, so what is written next follows it in the stream."""
        while self._flushing is not None:
            await self._flushing

    def take_pending(self) -> list[bytes]:
        pending, self.pending = self.pending, []
        return pending

    async def flush(self) -> None:
        """Write the buffered live events (fenced by the lease); on failure they wait for the next write."""
        if self._flushing is not None or not self.pending:
            return
        entries = self.take_pending()
        self._flushing = asyncio.get_running_loop().create_future()
        keys, lease = self.queue.keys, self.lease
        try:
            written = await self.queue.call(
                "rq_events",
                [keys.lock(lease.instance_id), keys.epoch(lease.instance_id), keys.events(lease.instance_id)],
                [lease.token, lease.epoch, self.queue.events_maxlen, self.queue.events_ttl_ms, *entries],
            )
            if not written:
                lease.lost = True
        except Exception as exc:  # Redis unreachable: keep them for the next write (a commit or the finish)
            logger.warning(
                "live events of %s not written yet: %s: %s", lease.instance_id, type(exc).__name__, exc
            )
            self.pending[:0] = entries
        finally:
            done, self._flushing = self._flushing, None
            done.set_result(None)
        if self.pending:
            self._on_live(self)

    # -- checkpoints -----------------------------------------------------------------------------------------

    async def write_record(self, record: CheckpointRecord, lease: Lease | None) -> None:
        if lease is not self.lease:
            await self.inner.write_record(record, lease)
            return
        await self.settled()
        CHECKPOINT_BYTES.observe(len(record.head) + (len(record.keyframe) if record.keyframe else 0))
        events = record.events or []
        instance_id = self.lease.instance_id
        entries = self.take_pending() + [encode_event(event, instance_id, self.run_hex) for event in events]
        # fenced_write.lua's keys and arguments: rq_commit.lua adds its own
        keys, args = self.inner.checkpoint_call(record, lease)
        self.committing = True
        try:
            with _redis_errors(f"write of checkpoint {record.checkpoint_id!r}", lease.instance_id):
                reply = await self.queue.call(
                    "rq_commit",
                    [*keys, self.queue.keys.events(lease.instance_id), self.run_key],
                    [len(args), *args, self.queue.events_maxlen, *entries],
                )
        finally:
            self.committing = False
        if reply[0] != 0:
            raise fenced_out(record, lease, reply[0])
        self.latest = record.checkpoint_id
        for event, event_id in zip(events, reply[2 + len(entries) - len(events) :], strict=True):
            event.event_id = event_id.decode()
        if reply[1] is not None and self.on_cancel is not None:
            self.on_cancel()

    async def latest_id(self, instance_id: str) -> str | None:
        if instance_id == self.lease.instance_id and not self.lease.lost:
            return self.latest
        return await self.inner.latest_id(instance_id)

    async def read_record(self, checkpoint_id: str) -> tuple[bytes, bytes | None] | None:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and checkpoint_id == self.latest:
            return prefetched
        return await self.inner.read_record(checkpoint_id)

    async def read_records(self, checkpoint_ids: list[str]) -> list[tuple[bytes, bytes | None] | None]:
        return await self.inner.read_records(checkpoint_ids)

    async def list_ids(self, instance_id: str) -> list[str]:
        return await self.inner.list_ids(instance_id)

    async def delete_record(self, checkpoint_id: str) -> bool:
        return await self.inner.delete_record(checkpoint_id)

    # -- the lease is the coordinator's; a run never reserves, renews or releases it -------------------------

    async def reserve(self, instance_id: str, token: str, owner: dict[str, Any]) -> Lease:
        return await self.inner.reserve(instance_id, token, owner)

    async def renew(self, lease: Lease) -> bool:
        return await self.inner.renew(lease)

    async def release(self, lease: Lease) -> bool:
        return await self.inner.release(lease)

    async def describe(self, instance_id: str) -> ReservationInfo:
        return await self.inner.describe(instance_id)
