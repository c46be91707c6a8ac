"""The coordinator's side of the run queue: claim instances, start and finish their runs, keep them alive.

``workers.Coordinator`` drives the runs; everything it does in Redis is here, one Lua call per state change:

* ``read`` new ready entries (``XREADGROUP``, as many as it has free slots) and ``sweep`` entries whose
  coordinator stopped heart-beating (``XAUTOCLAIM`` past the lease TTL);
* ``start`` an instance it read or swept: its lease and its next run (``rq_start.lua``);
* ``finish`` a run: its result, then the instance's next run under the same lease, or the release
  (``rq_finish.lua``);
* ``heartbeat``: one round trip every third of the lease TTL re-claims every in-flight entry (``XCLAIM ...
  JUSTID`` resets its idle time) and renews every lease held.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from barrierflow.engine.events import EventType, RunState, WorkflowEvent
from barrierflow.engine.store import Lease

from .connection import blocking_limit
from .run_records import decode_event, decode_input, encode_event, encode_result, submitted_by
from .scripts import milliseconds

if TYPE_CHECKING:
    from .run_journal import RunJournal
    from .run_queue import RunQueue

GROUP = "coordinators"

_STALE, _BUSY, _IDLE, _STARTED = 0, 1, 2, 3
_LOST, _DONE, _NEXT = 0, 1, 2


@dataclass(slots=True)
class ClaimedRun:
    """A run a coordinator started (as ``begin_run`` in ``rq_lib.lua`` returns it)."""

    instance_id: str
    run_hex: str
    attempts: int
    crashes: int
    workflow: str
    signature: str
    input: bytes | None
    committed: str | None  # the last checkpoint this run committed (an earlier attempt's, on a takeover)
    cancel_requested: bool
    after: str

    @property
    def run_id(self) -> str:
        return f"{self.instance_id}@{self.run_hex}"

    @property
    def taken_over(self) -> bool:
        return self.attempts > 1

    def message(self) -> tuple[Any, dict[str, Any], str | None]:
        """The submitted ``(message, responses, checkpoint_id)``."""
        return decode_input(self.input) if self.input else (None, {}, None)

    def submitted_by(self) -> str | None:
        """The ``traceparent`` of the run's ``barrierflow.queue.submit`` span (when it was traced)."""
        return submitted_by(self.input) if self.input else None

    @classmethod
    def parse(cls, instance_id: str, reply: list[Any]) -> ClaimedRun:
        hex_, attempts, crashes, workflow, signature, data, committed, cancel, after = reply
        return cls(
            instance_id=instance_id,
            run_hex=hex_.decode(),
            attempts=int(attempts),
            crashes=int(crashes),
            workflow=(workflow or b"").decode(),
            signature=(signature or b"").decode(),
            input=data,
            committed=committed.decode() if committed else None,
            cancel_requested=bool(cancel),
            after=(after or b"0-0").decode(),
        )


@dataclass(slots=True)
class Claim:
    """What ``start`` got: a run and its lease, or why not (``busy`` names the holder, ``stale``/``idle``)."""

    run: ClaimedRun | None = None
    lease: Lease | None = None
    prefetched: tuple[str | None, bytes | None, bytes | None] = (None, None, None)
    busy: dict[str, Any] | None = None
    takeover: bool = False  # the run was in the hands of a coordinator that died (its lease expired)


class CoordinatorQueue:
    """One coordinator's Redis operations on a ``RunQueue`` (its consumer name is ``name``)."""

    def __init__(self, queue: RunQueue, name: str) -> None:
        self.queue = queue
        self.keys = queue.keys
        self.name = name
        self.ready = queue.ready_key

    @property
    def client(self) -> Any:
        return self.queue.store.client

    async def ensure_group(self) -> None:
        """Create the coordinators' group, reading from the start of the stream (entries may predate it)."""
        try:
            await self.client.xgroup_create(self.ready, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- claiming --------------------------------------------------------------------------------------------

    async def read(self, count: int, block: float) -> list[tuple[str, str]]:
        """New ready entries, ``(entry id, instance id)``, at most ``count``, waiting up to ``block`` seconds
        (no longer than the waiting pool's socket timeout allows)."""
        waiting = self.queue.store.blocking_client
        block_ms = milliseconds(min(block, blocking_limit(waiting)))
        reply = await waiting.xreadgroup(GROUP, self.name, {self.ready: ">"}, count=count, block=block_ms)
        return _entries(reply[0][1] if reply else [])

    async def sweep(self, min_idle_ms: int, count: int, cursor: str) -> tuple[str, list[tuple[str, str]]]:
        """Entries idle longer than ``min_idle_ms``, now this coordinator's: ``(next cursor, entries)``."""
        reply = await self.client.xautoclaim(self.ready, GROUP, self.name, min_idle_ms, cursor, count=count)
        next_cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return next_cursor, _entries(reply[1])

    async def reap(self, min_idle_ms: int) -> int:
        """Delete consumers of dead coordinators that hold no entry (``rq_reap.lua``)."""
        return int(await self.queue.call("rq_reap", [self.ready], [GROUP, min_idle_ms, self.name]))

    async def requeue(self, entry_id: str, instance_id: str) -> None:
        """Give back an entry read but not started (``rq_requeue.lua``)."""
        keys = self.keys
        await self.queue.call(
            "rq_requeue",
            [keys.run_sched(instance_id), keys.run_queue(instance_id), self.ready],
            [entry_id, GROUP, instance_id],
        )

    async def heartbeat(self, entry_ids: list[str], leases: list[Lease]) -> list[bool]:
        """Reset the idle time of our entries and renew our leases, in one round trip; which leases held."""
        calls = []
        keys = self.keys
        for lease in leases:
            instance_id = lease.instance_id
            calls.append(
                self.queue.call(
                    "renew",
                    [keys.lock(instance_id), keys.owner(instance_id), keys.epoch(instance_id)],
                    [lease.token, lease.epoch, milliseconds(lease.ttl), self.queue.store.epoch_ttl_ms],
                )
            )
        if entry_ids:
            await self.client.xclaim(self.ready, GROUP, self.name, 0, entry_ids, justid=True)
        return [bool(renewed) for renewed in await asyncio.gather(*calls)]

    # -- a run -----------------------------------------------------------------------------------------------

    async def start(self, entry_id: str, instance_id: str, token: str, ttl: float) -> Claim:
        keys = self.keys
        owner = {"host": self.name.split(":")[0], "coordinator": self.name, "since": time.time()}
        reply = await self.queue.call(
            "rq_start",
            [
                keys.lock(instance_id),
                keys.owner(instance_id),
                keys.epoch(instance_id),
                keys.run_queue(instance_id),
                keys.run_sched(instance_id),
                self.ready,
                keys.index(instance_id),
                keys.kfmap(instance_id),
                keys.queue_key("instances"),
            ],
            [
                instance_id,
                entry_id,
                GROUP,
                token,
                json.dumps(owner),
                milliseconds(ttl),
                self.name,
                _now_ms(),
                keys.base(instance_id),
                self.queue.store.epoch_ttl_ms,
            ],
        )
        kind = reply[0]
        if kind == _BUSY:
            return Claim(busy=_owner(reply[1]))
        if kind != _STARTED:
            return Claim()
        _, epoch, run, latest, head, keyframe, takeover = reply
        return Claim(
            run=ClaimedRun.parse(instance_id, run),
            lease=Lease(instance_id, token, int(epoch), ttl),
            prefetched=(latest.decode() if latest else None, head, keyframe),
            takeover=bool(takeover),
        )

    async def committed_outputs(self, run: ClaimedRun) -> list[Any]:
        """The outputs an earlier attempt of a taken-over run committed (from the instance's stream)."""
        outputs: list[Any] = []
        cursor = run.after
        key = self.keys.events(run.instance_id)
        while True:
            page = await self.client.xrange(key, min=f"({cursor}", count=1000)
            if not page:
                return outputs
            for entry_id, entry in page:
                event = decode_event(run.instance_id, entry_id, entry)
                if event.run_id == run.run_id and event.type == EventType.OUTPUT:
                    outputs.append(event.data)
            cursor = page[-1][0].decode()

    async def finish(
        self,
        journal: RunJournal,
        run: ClaimedRun,
        state: str,
        *,
        status: RunState | None = None,
        outputs: list[Any] | None = None,
        pending: dict[str, WorkflowEvent] | None = None,
        error: dict[str, Any] | None = None,
        go_on: bool,
    ) -> ClaimedRun | bool | None:
        """Record the run's end (or hand it back: ``state="handback"``); the next run to drive, ``None``
        when the lease was released, ``False`` when the lease had ended (nothing was written)."""
        queue, keys, lease = self.queue, self.keys, journal.lease
        instance_id = lease.instance_id
        await journal.settled()
        entries = journal.take_pending()
        result = b""
        if state != "handback":
            result = encode_result(status, outputs or [], pending or {}, error)
            ended = {"state": state, "status": status.value if status else None, "error": error}
            entries.append(encode_event(WorkflowEvent(EventType.RUN_ENDED, ended), instance_id, run.run_hex))
        reply = await queue.call(
            "rq_finish",
            [
                keys.lock(instance_id),
                keys.owner(instance_id),
                keys.epoch(instance_id),
                keys.run_queue(instance_id),
                keys.run_sched(instance_id),
                keys.run_record(instance_id, run.run_hex),
                keys.events(instance_id),
                self.ready,
                keys.runs_done(instance_id),
                keys.index(instance_id),
                keys.queue_key("instances"),
            ],
            [
                lease.token,
                lease.epoch,
                instance_id,
                run.run_hex,
                run.run_id,
                GROUP,
                state,
                result,
                _now_ms(),
                milliseconds(queue.result_ttl),
                queue.keep_results,
                queue.events_maxlen,
                queue.events_ttl_ms,
                1 if go_on else 0,
                milliseconds(lease.ttl),
                self.name,
                queue.ended_channel,
                keys.base(instance_id),
                queue.store.epoch_ttl_ms,
                *entries,
            ],
        )
        if reply[0] == _LOST:
            lease.lost = True
            return False
        if reply[0] == _NEXT:
            return ClaimedRun.parse(instance_id, reply[1])
        return None


def _entries(items: list[Any]) -> list[tuple[str, str]]:
    out = []
    for entry_id, fields in items:
        instance = (fields or {}).get(b"i")
        if instance is not None:
            out.append((entry_id.decode(), instance.decode()))
    return out


def _owner(raw: bytes | None) -> dict[str, Any]:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace") if raw else ""}


def _now_ms() -> int:
    return int(time.time() * 1000)
