"""Worker results of a superstep in Redis: fenced, first-write-wins records plus a list to block on.

The Celery barrier of ``workers`` does not use chords. Each task of a superstep writes one record, keyed by
(instance, run, epoch, superstep, task), in the instance's hash slot, and pushes its task number on a
per-superstep notify list, in one Lua call (``put_result.lua``) that first checks the run's lease. The
coordinator ``BRPOP``s the notify list, reads the records, re-sends what a dead worker left unfinished, and
deletes the keys once the superstep is collected. Why each rule exists, as timelines:

* **Fenced.** t=0 coordinator A (epoch 7) dispatches task 3; t=1 A dies; t=31 A's lease expires; t=32
  coordinator B reserves (epoch 8) and re-runs the superstep; t=40 the worker running A's task 3 finishes.
  Its write names epoch 7, the epoch key says 8: refused, so nothing of A's run is ever mistaken for B's.
* **First write wins.** t=0 task 3 goes to worker W1; t=20 W1 is cut off from Redis, its claim lapses, the
  coordinator re-sends task 3; t=31 W1 (slow, not dead) writes its result; t=32 W2 finishes the copy. W2's
  ``SET NX`` finds W1's record: nothing changes and nobody is woken twice. Both copies ran the same
  deliveries on the same committed state, and no effect of either exists outside its record until the
  coordinator commits one at the barrier.
* **A wake-up, not polling.** The coordinator sleeps in ``BRPOP`` until a task finishes or its next check.
  A notification lost with a dropped connection is covered: at a check the coordinator reads the records of
  the tasks still missing before it re-sends any.
* **One running copy, and "picked up" told apart from "queued".** A worker takes a copy with ``claim.lua``:
  the claim key (``SET`` only when no other copy holds it, token of this copy, short TTL refreshed while the
  handlers run, compare-and-expire / compare-and-delete by ``own_key.lua``) and the ``started`` record (the
  highest send number a worker picked up). At a check the coordinator reads result, claim and started
  together and re-sends only a task whose latest copy was picked up, whose claim lapsed and which has no
  result: its worker died. t=0 task 3 sent (send 1); no worker runs; t=30, 60, ... started is absent: the
  copy is still in the queue, so nothing is re-sent (the coordinator warns that no worker takes tasks); t=95
  a worker starts and takes it (started=1). Had the worker been SIGKILLed at t=96, its claim lapses at
  t=106, and the check at t=125 sees started=1 >= 1 sends, no claim, no result: send 2, then checks back off
  exponentially, and ``max_attempts`` sends fail the superstep. A duplicate copy of a running task finds the
  other copy's claim and neither runs nor touches it.
* **Round trips.** A worker's pack of copies (``workers/tasks.py``) takes all its claims in one pipeline and
  writes its results with their claim releases in another (``ResultWriter.claim_many``, ``Claims``). The
  coordinator reads records and cleans up through ``collect_results.lua``, batched across its runs
  (``broker/batching.py``): a superstep's last results are read, its keys deleted and the collected marker
  set in one call.
* **Nothing re-created after the barrier.** ``discard`` deletes the superstep's keys and leaves a marker
  ``<token>:<superstep>`` (the last superstep collected under that lease) that ``claim.lua`` and
  ``put_result.lua`` check with the lease: a late copy of a collected superstep, picked up while the same
  run still holds the lease, creates no key. Once the lease ends, the lease check refuses it anyway.

Keys (``broker/keys.py`` explains the slot; ``docs/keys.md`` lists them all), every one with a TTL and deleted
by ``discard``: ``P:{I}:bfw:res:<run>:<epoch>:<superstep>:<task>`` (string: the result, PX result TTL),
``P:{I}:bfw:note:<run>:<epoch>:<superstep>`` (list of finished task numbers, PX result TTL, set by every
push), ``P:{I}:bfw:claim:<run>:<epoch>:<superstep>:<task>`` (string: the running copy's token, PX claim TTL),
``P:{I}:bfw:started:<run>:<epoch>:<superstep>:<task>`` (string: highest send number picked up, PX result
TTL); and one per instance, ``P:{I}:bfw:collected`` (string ``<token>:<superstep>``, PX result TTL).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import NoScriptError

from .batching import ScriptBatcher
from .connection import blocking_limit
from .keys import KeySpace
from .scripts import milliseconds, script_source

logger = logging.getLogger("barrierflow.broker")


class PutStatus(enum.IntEnum):
    """What ``put_result.lua`` did."""

    FENCED = 0  # the lease ended: nothing written
    WRITTEN = 1
    DUPLICATE = 2  # this task's record was already there: nothing changed
    COLLECTED = 3  # the superstep was collected already (a late copy): nothing written


class ClaimStatus(enum.IntEnum):
    """What ``claim.lua`` answered; anything but ``CLAIMED`` means "do not run"."""

    FENCED = 0  # the lease ended
    CLAIMED = 1
    DONE = 2  # the result is there already
    COLLECTED = 3  # the superstep was collected already
    BUSY = 4  # another copy holds the claim: it is running


class ResultKeys:
    """Key names of one superstep's results under one store prefix."""

    __slots__ = ("_step", "instance_id", "space", "superstep")

    def __init__(self, prefix: str, instance_id: str, run_id: str, epoch: int, superstep: int) -> None:
        self.space = KeySpace(prefix)
        self.instance_id = instance_id
        self.superstep = superstep
        self._step = f"{run_id}:{epoch}:{superstep}"

    def _task_key(self, kind: str, task: int) -> str:
        return self.space.user_key(self.instance_id, f"bfw:{kind}:{self._step}:{task}")

    def result(self, task: int) -> str:
        return self._task_key("res", task)

    def claim(self, task: int) -> str:
        return self._task_key("claim", task)

    def started(self, task: int) -> str:
        return self._task_key("started", task)

    @property
    def notify(self) -> str:
        return self.space.user_key(self.instance_id, f"bfw:note:{self._step}")

    @property
    def collected(self) -> str:
        """The instance's marker of the last superstep collected (see the module doc)."""
        return self.space.user_key(self.instance_id, "bfw:collected")

    @property
    def lock(self) -> str:
        return self.space.lock(self.instance_id)

    @property
    def epoch(self) -> str:
        return self.space.epoch(self.instance_id)

    def fence(self) -> list[str]:
        """The keys every worker script checks first: lock, epoch, collected marker."""
        return [self.lock, self.epoch, self.collected]


@dataclass(frozen=True, slots=True)
class TaskCopy:
    """One copy of a task a worker takes: where its records go, its lease, which send it is, its TTLs."""

    keys: ResultKeys
    task: int
    token: str
    epoch: int
    send: int
    claim_ttl: float
    result_ttl: float


_Call = tuple[str, list[Any], list[Any]]


class ResultWriter:
    """The worker's side, on a synchronous client (a Celery task is synchronous code).

    A pack of task copies (``workers/tasks.py``) costs two round trips however many copies it holds: the
    claims go out as one pipeline (``claim_many``), the results and the claims' releases as another
    (``put_many``). The pipelines send plain ``EVALSHA`` (redis-py's would check ``SCRIPT EXISTS`` first);
    a ``NOSCRIPT`` reply loads the scripts and retries those calls once. Each call keeps its own reply, so
    one copy's fence (its run's lease ended, its superstep collected) never spoils the others of its pack.
    """

    _NAMES = ("put_result", "claim", "own_key")

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._sources = {name: script_source(name) for name in self._NAMES}
        self._shas = {
            name: hashlib.sha1(source.encode()).hexdigest() for name, source in self._sources.items()
        }

    def call_many(self, calls: Sequence[_Call]) -> list[Any]:
        """Run ``(script, keys, args)`` calls in one pipeline; each reply, or its error as an exception object."""
        if not calls:
            return []
        replies = self._pipeline(calls)
        retry = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if retry:  # first use, or a restarted Redis: load and retry those once
            for source in self._sources.values():
                self.client.script_load(source)
            for i, reply in zip(retry, self._pipeline([calls[i] for i in retry]), strict=True):
                replies[i] = reply
        return replies

    def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        with self.client.pipeline(transaction=False) as pipe:
            for name, keys, args in calls:
                pipe.evalsha(self._shas[name], len(keys), *keys, *args)
            return pipe.execute(raise_on_error=False)

    def claim_many(
        self, copies: Sequence[TaskCopy], *, flush_after: float = 0.05
    ) -> tuple[list[ClaimStatus | Exception], Claims]:
        """Take each copy (``claim.lua``), in one round trip: what each answered, and the claims taken, refreshed
        together until released (a copy's status is ``CLAIMED`` when its claim is among them); their results
        are ``post``-ed there (``Claims``, ``flush_after``)."""
        tokens = [os.urandom(8).hex() for _ in copies]
        replies = self.call_many(
            [
                (
                    "claim",
                    [*c.keys.fence(), c.keys.result(c.task), c.keys.claim(c.task), c.keys.started(c.task)],
                    [
                        c.token,
                        c.epoch,
                        c.keys.superstep,
                        token,
                        milliseconds(c.claim_ttl),
                        c.send,
                        milliseconds(c.result_ttl),
                    ],
                )
                for c, token in zip(copies, tokens, strict=True)
            ]
        )
        statuses: list[ClaimStatus | Exception] = [
            reply if isinstance(reply, Exception) else ClaimStatus(int(reply)) for reply in replies
        ]
        held = {
            c.keys.claim(c.task): (token, c.claim_ttl)
            for c, token, status in zip(copies, tokens, statuses, strict=True)
            if status is ClaimStatus.CLAIMED
        }
        return statuses, Claims(self, held, flush_after)

    def claim(
        self,
        keys: ResultKeys,
        task: int,
        token: str,
        epoch: int,
        *,
        send: int,
        ttl: float,
        started_ttl: float,
    ) -> Claims | ClaimStatus:
        """Take copy ``send`` of one task: its ``Claims``, refreshed until released, or why not to run it."""
        [status], claims = self.claim_many([TaskCopy(keys, task, token, epoch, send, ttl, started_ttl)])
        if isinstance(status, Exception):
            claims.release()
            raise status
        if status is not ClaimStatus.CLAIMED:
            return status
        return claims

    def put_many(
        self, results: Sequence[tuple[TaskCopy, bytes]], claims: Claims | None = None
    ) -> list[PutStatus | Exception]:
        """Write each record and notify (``put_result.lua``, fenced by the lease and the collected marker) and
        release those copies' claims held in ``claims``, in one round trip: each status, or its own error."""
        calls: list[_Call] = [
            (
                "put_result",
                [*c.keys.fence(), c.keys.result(c.task), c.keys.notify],
                [c.token, c.epoch, c.keys.superstep, value, milliseconds(c.result_ttl), c.task],
            )
            for c, value in results
        ]
        if claims is not None:
            calls += claims.take([c.keys.claim(c.task) for c, _ in results])
        replies = self.call_many(calls)[: len(results)]
        return [reply if isinstance(reply, Exception) else PutStatus(int(reply)) for reply in replies]

    def put(self, keys: ResultKeys, task: int, token: str, epoch: int, value: bytes, ttl: float) -> PutStatus:
        """Write one record and notify, fenced by the lease and the collected marker (``put_result.lua``)."""
        [status] = self.put_many([(TaskCopy(keys, task, token, epoch, 0, ttl, ttl), value)])
        if isinstance(status, Exception):
            raise status
        return status


class Claims:
    """A worker's claims on the task copies it runs, and the results of those it finished, written in batches.

    One thread per pack of copies. It refreshes every claim still held in one pipeline, every third of the
    shortest claim TTL: a thread, because the handlers run on the task's own thread and may hold it for long
    (CPU-bound code); the GIL still lets this one run every few milliseconds. Refresh and release compare the
    copy's token first (``own_key.lua``), so a copy whose claim lapsed never extends or deletes the claim of
    the copy that took over; a lapsed claim is dropped from the set. A refresh that fails (Redis unreachable)
    is harmless: the claim lapses and the coordinator re-sends the task, whose duplicate result is ignored.

    A finished copy's result is ``post``-ed: the thread writes what waited ``flush_after`` seconds, with the
    release of those copies' claims, in one round trip (so a slow copy later in the pack does not hold back
    the results of the fast ones before it); ``release`` writes the rest. ``written`` says how each went.
    """

    def __init__(
        self, writer: ResultWriter, held: dict[str, tuple[str, float]], flush_after: float = 0.05
    ) -> None:
        self._writer = writer
        self._held = held  # claim key -> (this copy's token, claim TTL)
        self._outbox: list[tuple[TaskCopy, bytes]] = []
        self._posted_at = 0.0  # when the oldest result in the outbox was posted
        self.written: list[tuple[TaskCopy, PutStatus | Exception]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if held:
            every = min(ttl for _, ttl in held.values()) / 3
            self._thread = threading.Thread(
                target=self._run, args=(every, flush_after), daemon=True, name="bfw-claim"
            )
            self._thread.start()

    def _run(self, every: float, flush_after: float) -> None:
        refresh_at = time.monotonic() + every
        while not self._stop.wait(min(every, flush_after)):
            now = time.monotonic()
            if self._outbox and now - self._posted_at >= flush_after:
                self.flush()
            if now >= refresh_at:
                refresh_at = now + every
                if not self._refresh():
                    return

    def _refresh(self) -> bool:
        """Extend every claim still held; ``False`` once none is."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return False
        calls: list[_Call] = [("own_key", [key], [token, milliseconds(ttl)]) for key, (token, ttl) in held]
        try:
            replies = self._writer.call_many(calls)
        except redis.RedisError as exc:
            logger.warning("could not refresh %d claim(s): %s", len(calls), exc)
            return True
        with self._lock:
            for (key, _), reply in zip(held, replies, strict=True):
                if reply == 0:  # lapsed, and perhaps another copy's now: never touch it again
                    self._held.pop(key, None)
                elif isinstance(reply, Exception):
                    logger.warning("could not refresh the claim %s: %s", key, reply)
        return True

    def post(self, copy: TaskCopy, value: bytes) -> None:
        """A finished copy's result: written with its claim's release within ``flush_after`` (or at ``release``)."""
        with self._lock:
            if not self._outbox:
                self._posted_at = time.monotonic()
            self._outbox.append((copy, value))

    def flush(self) -> None:
        """Write the posted results and release their claims now, in one round trip."""
        with self._lock:
            batch, self._outbox = self._outbox, []
        if not batch:
            return
        try:
            statuses = self._writer.put_many(batch, self)
        except Exception as exc:  # Redis unreachable: the claims lapse, the coordinator re-sends the copies
            logger.warning("could not write %d result(s): %s", len(batch), exc)
            statuses = [exc] * len(batch)
        with self._lock:
            self.written.extend(zip((copy for copy, _ in batch), statuses, strict=True))

    def take(self, keys: Sequence[str] | None = None) -> list[_Call]:
        """Stop refreshing these claims (``None``: all); the calls that release them (compare-and-delete)."""
        with self._lock:
            names = list(self._held) if keys is None else keys
            taken = [(key, self._held.pop(key)) for key in names if key in self._held]
        return [("own_key", [key], [token, 0]) for key, (token, _) in taken]

    def release(self) -> None:
        """Stop the thread, write the results still posted, release every claim still held (one round trip)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        calls = self.take()
        try:
            self._writer.call_many(calls)
        except redis.RedisError as exc:  # they lapse by their TTL
            logger.warning("could not release %d claim(s): %s", len(calls), exc)


#: The single-copy name of ``Claims`` (``ResultWriter.claim`` returns one).
Claim = Claims


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """What Redis says of one task at a check: its result, whether a copy runs, the highest send taken."""

    result: bytes | None
    running: bool
    started: int


class ResultReader:
    """The coordinator's side, on an asyncio client (``waiting``: the one for ``BRPOP``, default the same).

    Reads of records and clean-ups go through ``scripts`` (``collect_results.lua``), a ``ScriptBatcher`` the
    dispatcher shares between the runs of its loop, so that those of many runs cost one pipeline.
    """

    def __init__(
        self, client: AsyncRedis, waiting: AsyncRedis | None = None, scripts: ScriptBatcher | None = None
    ) -> None:
        self.client = client
        self.waiting = client if waiting is None else waiting
        self._block = blocking_limit(self.waiting)
        self.scripts = scripts if scripts is not None else results_batcher(lambda: client)

    async def wait(self, keys: ResultKeys, timeout: float, most: int = 1000) -> list[int]:
        """Task numbers that finished: block up to ``timeout`` s for one, then take those already queued, up to
        ``most`` in all (the tasks still awaited: with one, the ``BRPOP`` says everything).

        A single ``BRPOP`` blocks at most ``blocking_limit`` of the client (half its socket timeout): a
        longer block would time out on the client while the server is still legitimately waiting. The
        caller loops, so a long wait is several short ones.
        """
        if timeout > 0:
            # LPUSH + BRPOP: first finished, first taken. A float timeout needs Redis >= 6; 0 means "forever".
            popped = await self.waiting.brpop([keys.notify], timeout=max(min(timeout, self._block), 0.001))
            if popped is None:
                return []
            done = [int(popped[1])]
        else:
            done = []
        if most <= len(done):
            return done
        rest = await self.client.rpop(keys.notify, most - len(done))
        if rest:
            done.extend(int(item) for item in rest)
        return done

    async def fetch(self, keys: ResultKeys, tasks: Sequence[int]) -> list[bytes | None]:
        """The records of ``tasks`` (``None`` where missing)."""
        if not tasks:
            return []
        return await self._collect(keys, tasks, None, "", 0.0)

    async def collect(
        self, keys: ResultKeys, tasks: Sequence[int], every: Sequence[int], token: str, ttl: float
    ) -> list[bytes | None]:
        """The records of ``tasks``, the last of the superstep's tasks ``every``; when all of them are there,
        the superstep's keys are deleted and it is marked collected, in the same call (as ``discard``)."""
        return await self._collect(keys, tasks, every, token, ttl)

    async def _collect(
        self,
        keys: ResultKeys,
        tasks: Sequence[int],
        every: Sequence[int] | None,
        token: str,
        ttl: float,
    ) -> list[bytes | None]:
        """``collect_results.lua``: one call, its keys in the instance's slot; ``every=None`` reads only."""
        read = [keys.result(task) for task in tasks]
        others: list[str] = []
        if every is not None:
            reading = set(tasks)
            others.append(keys.notify)
            for task in every:
                others += (keys.claim(task), keys.started(task))
                if task not in reading:
                    others.append(keys.result(task))
        values = await self.scripts.call(
            "collect_results",
            [keys.collected, *read, *others],
            [len(read), 0 if every is None else 1, f"{token}:{keys.superstep}", milliseconds(ttl)],
        )
        return [value if value else None for value in values]

    async def progress(
        self, keys: ResultKeys, tasks: Sequence[int], token: str, epoch: int
    ) -> tuple[bool, list[TaskProgress]]:
        """Whether the lease holds, and result, live claim and highest send picked up of each task: one ``MGET``."""
        names = [name for task in tasks for name in (keys.result(task), keys.claim(task), keys.started(task))]
        lock, current, *values = await self.client.mget([keys.lock, keys.epoch, *names])
        holds = lock == token.encode() and current == str(epoch).encode()
        return holds, [
            TaskProgress(values[i], values[i + 1] is not None, int(values[i + 2] or 0))
            for i in range(0, len(values), 3)
        ]

    async def lease_holds(self, keys: ResultKeys, token: str, epoch: int) -> bool:
        lock, current = await self.client.mget([keys.lock, keys.epoch])
        return lock == token.encode() and current == str(epoch).encode()

    async def discard(self, keys: ResultKeys, tasks: Sequence[int], token: str, ttl: float) -> None:
        """Delete the superstep's keys and mark it collected under this lease, atomically (see the module doc)."""
        await self._collect(keys, (), tasks, token, ttl)


def results_batcher(client: Callable[[], AsyncRedis]) -> ScriptBatcher:
    """The batcher of ``ResultReader``'s script, on the client ``client()`` returns."""
    return ScriptBatcher(client, ("collect_results",))
