"""Worker results of a superstep in Redis: fenced, first-write-wins records plus a list to block on.

The Celery barrier of ``workers`` does not use chords. Each task of a superstep writes one record, keyed by
(instance, run, epoch, superstep, task), in the instance's hash slot, and pushes its task number on a
per-superstep notify list, in one Lua call (``put_result.lua``) that first checks the run's lease. The
coordinator ``BRPOP``s the notify list, reads the records, re-dispatches what is missing after a deadline, and
deletes the keys once the superstep is collected. Why each rule exists, as timelines:

* **Fenced.** t=0 coordinator A (epoch 7) dispatches task 3; t=1 A dies; t=31 A's lease expires; t=32
  coordinator B reserves (epoch 8) and re-runs the superstep; t=40 the worker running A's task 3 finishes.
  Its write names epoch 7, the epoch key says 8: refused, so nothing of A's run is ever mistaken for B's (B's
  keys name epoch 8 anyway; the fence also stops the stale run from filling Redis).
* **First write wins.** t=0 task 3 goes to worker W1; t=30 no result yet, the coordinator re-sends task 3;
  t=31 W1 (slow, not dead) writes its result; t=32 W2 finishes the copy. W2's ``SET NX`` finds W1's record:
  nothing changes and nobody is woken twice. Both copies ran the same deliveries on the same committed state,
  and no effect of either exists outside its record until the coordinator commits one at the barrier.
* **A wake-up, not polling.** The coordinator sleeps in ``BRPOP`` until a task finishes or its next deadline.
  A notification lost with a dropped connection is covered: at a deadline the coordinator reads the records
  of the tasks still missing before it re-sends any.
* **A claim while running.** A worker holds a short-TTL claim on the task it runs and refreshes it while its
  handlers run. At a deadline the coordinator re-sends only tasks with neither a result nor a live claim, so
  a handler that legitimately runs for ten minutes is not duplicated every ``redispatch_after``, while a
  SIGKILLed worker's claim lapses within its TTL and its task is re-sent at the next deadline.

Keys (``broker/keys.py`` explains the slot), all with a TTL: ``P:{I}:bfw:res:<run>:<epoch>:<superstep>:<task>``
(string: the result), ``P:{I}:bfw:note:<run>:<epoch>:<superstep>`` (list of finished task numbers) and
``P:{I}:bfw:claim:<run>:<epoch>:<superstep>:<task>`` (string: the worker running it).
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Sequence

import redis
from redis.asyncio import Redis as AsyncRedis

from .keys import KeySpace
from .scripts import milliseconds, script_source


class PutStatus(enum.IntEnum):
    """What ``put_result.lua`` did."""

    FENCED = 0  # the lease ended: nothing written
    WRITTEN = 1
    DUPLICATE = 2  # this task's record was already there: nothing changed


class ResultKeys:
    """Key names of one superstep's results under one store prefix."""

    __slots__ = ("_base", "space")

    def __init__(self, prefix: str, instance_id: str, run_id: str, epoch: int, superstep: int) -> None:
        self.space = KeySpace(prefix)
        self._base = (instance_id, f"{run_id}:{epoch}:{superstep}")

    @property
    def instance_id(self) -> str:
        return self._base[0]

    def result(self, task: int) -> str:
        instance_id, step = self._base
        return self.space.user_key(instance_id, f"bfw:res:{step}:{task}")

    def claim(self, task: int) -> str:
        instance_id, step = self._base
        return self.space.user_key(instance_id, f"bfw:claim:{step}:{task}")

    @property
    def notify(self) -> str:
        instance_id, step = self._base
        return self.space.user_key(instance_id, f"bfw:note:{step}")

    @property
    def lock(self) -> str:
        return self.space.lock(self.instance_id)

    @property
    def epoch(self) -> str:
        return self.space.epoch(self.instance_id)


class ResultWriter:
    """The worker's side, on a synchronous client (a Celery task is synchronous code)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._put = client.register_script(script_source("put_result"))

    def should_run(self, keys: ResultKeys, task: int, token: str, epoch: int) -> bool:
        """Whether running the task can still matter: the lease holds and no result is there yet.

        Only an optimisation (a stale or duplicate copy skips its handlers); ``put`` is what guarantees it.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(keys.lock).get(keys.epoch).exists(keys.result(task))
            lock, current_epoch, exists = pipe.execute()
        return lock == token.encode() and current_epoch == str(epoch).encode() and not exists

    def claim(self, keys: ResultKeys, task: int, worker: str, ttl: float) -> Claim:
        """Claim the task for ``ttl`` seconds and keep refreshing it until the returned ``Claim`` is released."""
        return Claim(self.client, keys.claim(task), worker, ttl)

    def put(self, keys: ResultKeys, task: int, token: str, epoch: int, value: bytes, ttl: float) -> PutStatus:
        """Write the record and notify, fenced by the lease (``put_result.lua``)."""
        reply = self._put(
            keys=[keys.lock, keys.epoch, keys.result(task), keys.notify],
            args=[token, epoch, value, milliseconds(ttl), task],
        )
        return PutStatus(int(reply))


class Claim:
    """A worker's claim on a running task: a key with a short TTL, refreshed by a thread until ``release``.

    A thread, because the handlers run on the task's own thread and may hold it for long (CPU-bound code);
    the GIL still lets this one run every few milliseconds. A refresh that fails (Redis unreachable) is
    harmless: the claim lapses and the coordinator re-sends the task, whose duplicate result is ignored.
    """

    def __init__(self, client: redis.Redis, key: str, worker: str, ttl: float) -> None:
        self._client, self._key, self._ms = client, key, milliseconds(ttl)
        client.set(key, worker, px=self._ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, args=(ttl / 3,), daemon=True, name="bfw-claim")
        self._thread.start()

    def _refresh(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(redis.RedisError):
                self._client.pexpire(self._key, self._ms)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(redis.RedisError):
            self._client.delete(self._key)


class ResultReader:
    """The coordinator's side, on an asyncio client."""

    def __init__(self, client: AsyncRedis) -> None:
        self.client = client

    async def wait(self, keys: ResultKeys, timeout: float) -> list[int]:
        """Task numbers that finished: block up to ``timeout`` s for one, then take all already queued."""
        client = self.client
        if timeout > 0:
            # LPUSH + BRPOP: first finished, first taken. A float timeout needs Redis >= 6; 0 means "forever".
            popped = await client.brpop([keys.notify], timeout=max(timeout, 0.001))
            if popped is None:
                return []
            done = [int(popped[1])]
        else:
            done = []
        rest = await client.rpop(keys.notify, 1000)
        if rest:
            done.extend(int(item) for item in rest)
        return done

    async def fetch(self, keys: ResultKeys, tasks: Sequence[int]) -> list[bytes | None]:
        if not tasks:
            return []
        # One MGET: the keys share the instance's hash tag, hence one slot.
        return await self.client.mget([keys.result(task) for task in tasks])

    async def claimed(self, keys: ResultKeys, tasks: Sequence[int]) -> list[bool]:
        """Whether a worker holds a live claim on each task."""
        if not tasks:
            return []
        return [value is not None for value in await self.client.mget([keys.claim(task) for task in tasks])]

    async def lease_holds(self, keys: ResultKeys, token: str, epoch: int) -> bool:
        lock, current = await self.client.mget([keys.lock, keys.epoch])
        return lock == token.encode() and current == str(epoch).encode()

    async def discard(self, keys: ResultKeys, tasks: Sequence[int]) -> None:
        """Delete the superstep's records and notify list (a late duplicate re-creates one; its TTL ends it)."""
        await self.client.delete(
            keys.notify, *(key for task in tasks for key in (keys.result(task), keys.claim(task)))
        )
