"""The registry of live barrierflow workers in Redis: who consumes which queue, with how many slots.

Coordinators need to know which workers consume their queue: to size a superstep's plan (their pool sizes), to
tell a user "no live worker consumes queue Q" before a ``--celery`` run, and for a health check. Celery's
remote control could answer (``inspect().stats()``, ``control.ping()``), but each such broadcast makes a reply
list ``<uuid>.reply.celery.pidbox`` in the broker's Redis, and a reply that arrives after the caller stopped
listening re-creates that list without a TTL, under a name nobody will ever read again (celery/celery#6089,
kombu#294). Timeline: t=0 the coordinator pings with ``limit=1``; t=0.01 worker A answers, the caller stops
listening and deletes its reply list and binding; t=0.011 worker B, which had looked the binding up at
t=0.009, pushes its answer: the list exists again, with no TTL, for ever. So barrierflow broadcasts nothing
with replies: each worker writes its own entry here, and readers read it.

Keys, all under the store prefix ``P`` and in one Redis Cluster hash slot (the tag ``{P}``), so one script
updates them together. ``docs/keys.md`` lists them with the instance keys:

=================================  =====  ==========================================================
key                                type   holds
=================================  =====  ==========================================================
``P:workers:{P}:queues``           zset   queue -> expiry (ms) of its latest heartbeat
``P:workers:{P}:live:<queue>``     zset   node -> expiry (ms) of its entry
``P:workers:{P}:entry:<queue>``    hash   node -> ``<token>:<json>`` (``WorkerEntry``)
=================================  =====  ==========================================================

Lifetimes: each worker beats every ``interval`` seconds (``worker_beat.lua``): its entry expires ``ttl``
after its latest beat, entries whose expiry passed are pruned by the next beat of any worker on that queue,
and every key's TTL follows its latest entry, so a queue whose workers are all gone vanishes by itself. A
worker that stops removes its entries at once (``worker_leave.lua``, compare-and-delete on its token); a
killed one lapses after ``ttl``. Readers take the server's clock with the entries (one round trip) and never
count an entry whose expiry passed, pruned yet or not. The ``P:workers:`` keys never collide with an
instance's (``P:{I}:...``) nor with ``P:foreign:...``.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from .keys import KeySpace
from .scripts import milliseconds, script_source

#: Heartbeats an entry outlives: a worker is counted gone after this many missed beats.
MISSED_BEATS = 3


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    """What one worker says of itself. ``expires`` and ``age`` (seconds since its latest beat, by the
    server's clock) are filled in by the reader."""

    node: str
    queues: tuple[str, ...]
    slots: int
    host: str
    pid: int
    started_at: float
    layout: str
    interval: float
    pool: str = ""
    version: str = ""
    age: float = field(default=0.0, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        del data["age"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, age: float = 0.0) -> WorkerEntry:
        data = json.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["queues"] = tuple(known.get("queues", ()))
        return cls(**{**known, "age": age})

    def as_record(self) -> dict[str, Any]:
        """Plain fields for JSON output."""
        return {**asdict(self), "queues": list(self.queues), "age": round(self.age, 3)}


class RegistryKeys:
    """Key names of the registry under one prefix (see the module doc)."""

    __slots__ = ("base",)

    def __init__(self, prefix: str) -> None:
        KeySpace(prefix)  # the same rule as the instance keys: non-empty, no braces
        self.base = f"{prefix}:workers:{{{prefix}}}:"

    @property
    def queues(self) -> str:
        return self.base + "queues"

    def live(self, queue: str) -> str:
        return f"{self.base}live:{queue}"

    def entries(self, queue: str) -> str:
        return f"{self.base}entry:{queue}"

    def of_queues(self, queues: Iterable[str]) -> list[str]:
        """``live`` and ``entries`` of each queue, in pairs (the scripts' key order)."""
        return [key for queue in queues for key in (self.live(queue), self.entries(queue))]


def _now_ms(time_reply: Sequence[Any]) -> int:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


def _ask_queue(pipe: Any, keys: RegistryKeys, queue: str) -> None:
    """Queue the reads of one queue's entries on ``pipe`` (sync or asyncio): its live set and its entries."""
    pipe.zrange(keys.live(queue), 0, -1, withscores=True)
    pipe.hgetall(keys.entries(queue))


def _live_entries(
    now_ms: int, scored: Sequence[tuple[bytes, float]], raw: dict[bytes, bytes]
) -> list[WorkerEntry]:
    """The entries whose expiry is still ahead of the server's clock, by node name."""
    found = []
    for node, expires in scored:
        value = raw.get(node)
        if expires <= now_ms or value is None:
            continue
        entry = WorkerEntry.from_json(value.partition(b":")[2])
        since_beat = entry.interval * MISSED_BEATS - (expires - now_ms) / 1000
        found.append(dataclasses.replace(entry, age=max(0.0, since_beat)))
    return sorted(found, key=lambda e: e.node)


class WorkerRegistry:
    """Reads the registry on an asyncio client (the dispatcher, the CLI). Each read is one round trip."""

    def __init__(self, client: AsyncRedis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = RegistryKeys(prefix)

    async def live(self, queue: str) -> list[WorkerEntry]:
        """The live workers consuming ``queue``."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            _ask_queue(pipe, self.keys, queue)
            now, scored, raw = await pipe.execute()
        return _live_entries(_now_ms(now), scored, raw)

    async def by_queue(self) -> dict[str, list[WorkerEntry]]:
        """Every queue with a live worker, and its live workers (two round trips)."""
        now, scored = await self._queue_index()
        queues = [name.decode() for name, expires in scored if expires > now]
        if not queues:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            for queue in queues:
                _ask_queue(pipe, self.keys, queue)
            now_reply, *replies = await pipe.execute()
        now = _now_ms(now_reply)
        found = {q: _live_entries(now, replies[2 * i], replies[2 * i + 1]) for i, q in enumerate(queues)}
        return {queue: workers for queue, workers in found.items() if workers}

    async def _queue_index(self) -> tuple[int, list[tuple[bytes, float]]]:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self.keys.queues, 0, -1, withscores=True)
            now, scored = await pipe.execute()
        return _now_ms(now), scored


class WorkerRegistration:
    """One worker's entry, on a synchronous client (the worker's heartbeat thread; tools that wait).

    ``token`` is new for each registration, so ``leave`` removes this process's entry only (``worker_leave.lua``).
    """

    def __init__(self, client: redis.Redis, prefix: str, node: str) -> None:
        self.client = client
        self.keys = RegistryKeys(prefix)
        self.node = node
        self.token = uuid.uuid4().hex
        self._beat = client.register_script(script_source("worker_beat"))
        self._leave = client.register_script(script_source("worker_leave"))

    def beat(self, entry: WorkerEntry) -> WorkerEntry | None:
        """Register or refresh ``entry`` on its queues for ``MISSED_BEATS`` intervals. Returns the entry of
        another live registration under the same node name, if any."""
        other = self._beat(
            keys=[self.keys.queues, *self.keys.of_queues(entry.queues)],
            args=[
                self.node,
                self.token,
                entry.to_json(),
                milliseconds(entry.interval * MISSED_BEATS),
                *entry.queues,
            ],
        )
        if not other:
            return None
        return WorkerEntry.from_json(other.partition(b":")[2])

    def leave(self, queues: Iterable[str]) -> int:
        """Remove this registration from ``queues``; returns how many it was still on."""
        keys = self.keys.of_queues(queues)
        return int(self._leave(keys=keys, args=[self.node, self.token])) if keys else 0


def forget_worker(client: redis.Redis, prefix: str, node: str, queues: Iterable[str]) -> int:
    """Remove ``node``'s entries from ``queues`` whatever their token: a worker that was killed and will not
    restart (its entries would lapse by themselves after ``MISSED_BEATS`` intervals)."""
    keys = RegistryKeys(prefix).of_queues(queues)
    if not keys:
        return 0
    return int(client.register_script(script_source("worker_leave"))(keys=keys, args=[node, ""]))


def live_workers(client: redis.Redis, prefix: str, queue: str) -> list[WorkerEntry]:
    """The live workers of ``queue``, read on a synchronous client (tests and tools that wait for workers)."""
    keys = RegistryKeys(prefix)
    with client.pipeline(transaction=False) as pipe:
        pipe.time()
        _ask_queue(pipe, keys, queue)
        now, scored, raw = pipe.execute()
    return _live_entries(_now_ms(now), scored, raw)
