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
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.asyncio import Redis as AsyncRedis

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


class ResultWriter:
    """The worker's side, on a synchronous client (a Celery task is synchronous code)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._put = client.register_script(script_source("put_result"))
        self._claim = client.register_script(script_source("claim"))
        self._own = client.register_script(script_source("own_key"))

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
    ) -> Claim | ClaimStatus:
        """Take copy ``send`` of the task: a ``Claim`` refreshed until released, or why not to run it."""
        copy = os.urandom(8).hex()
        status = ClaimStatus(
            int(
                self._claim(
                    keys=[*keys.fence(), keys.result(task), keys.claim(task), keys.started(task)],
                    args=[
                        token,
                        epoch,
                        keys.superstep,
                        copy,
                        milliseconds(ttl),
                        send,
                        milliseconds(started_ttl),
                    ],
                )
            )
        )
        if status is not ClaimStatus.CLAIMED:
            return status
        return Claim(self._own, keys.claim(task), copy, ttl)

    def put(self, keys: ResultKeys, task: int, token: str, epoch: int, value: bytes, ttl: float) -> PutStatus:
        """Write the record and notify, fenced by the lease and the collected marker (``put_result.lua``)."""
        reply = self._put(
            keys=[*keys.fence(), keys.result(task), keys.notify],
            args=[token, epoch, keys.superstep, value, milliseconds(ttl), task],
        )
        return PutStatus(int(reply))


class Claim:
    """A worker's claim on a running task copy, refreshed by a thread until ``release``.

    A thread, because the handlers run on the task's own thread and may hold it for long (CPU-bound code);
    the GIL still lets this one run every few milliseconds. Refresh and release compare the token first
    (``own_key.lua``), so a copy whose claim lapsed never extends or deletes the claim of the copy that
    took over. A refresh that fails (Redis unreachable) is harmless: the claim lapses and the coordinator
    re-sends the task, whose duplicate result is ignored.
    """

    def __init__(self, own_key: redis.commands.core.Script, key: str, token: str, ttl: float) -> None:
        self._own, self._key, self._token, self._ms = own_key, key, token, milliseconds(ttl)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, args=(ttl / 3,), daemon=True, name="bfw-claim")
        self._thread.start()

    def _refresh(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if not self._own(keys=[self._key], args=[self._token, self._ms]):
                    return  # lapsed, and perhaps another copy's now: never touch it again
            except redis.RedisError as exc:
                logger.warning("could not refresh the claim %s: %s", self._key, exc)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._own(keys=[self._key], args=[self._token, 0])
        except redis.RedisError as exc:  # it lapses by its TTL
            logger.warning("could not release the claim %s: %s", self._key, exc)


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """What Redis says of one task at a check: its result, whether a copy runs, the highest send taken."""

    result: bytes | None
    running: bool
    started: int


class ResultReader:
    """The coordinator's side, on an asyncio client (``waiting``: the one for ``BRPOP``, default the same)."""

    def __init__(self, client: AsyncRedis, waiting: AsyncRedis | None = None) -> None:
        self.client = client
        self.waiting = client if waiting is None else waiting
        self._block = blocking_limit(self.waiting)

    async def wait(self, keys: ResultKeys, timeout: float) -> list[int]:
        """Task numbers that finished: block up to ``timeout`` s for one, then take all already queued.

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
        rest = await self.client.rpop(keys.notify, 1000)
        if rest:
            done.extend(int(item) for item in rest)
        return done

    async def fetch(self, keys: ResultKeys, tasks: Sequence[int]) -> list[bytes | None]:
        if not tasks:
            return []
        # One MGET: the keys share the instance's hash tag, hence one slot.
        return await self.client.mget([keys.result(task) for task in tasks])

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
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.collected, f"{token}:{keys.superstep}", px=milliseconds(ttl))
            pipe.delete(
                keys.notify,
                *(
                    name
                    for task in tasks
                    for name in (keys.result(task), keys.claim(task), keys.started(task))
                ),
            )
            await pipe.execute()
