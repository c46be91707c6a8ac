"""Pub/sub notices of the run queue: ended runs (``wait`` without polling) and cancel requests.

``rq_finish.lua`` and ``rq_cancel.lua`` publish the id of every run that ends on ``P:rq:ended`` in the same
atomic call that writes its result, and ``rq_cancel.lua`` the id of a running run to stop on ``P:rq:cancel``.
``Subscription`` is one subscription per process and event loop; ``RunWaiters`` wakes the local waiters of an
ended run. Why a waiter cannot miss the end of its run:

- t=0 ``wait(r)`` makes sure the subscription is confirmed, registers its future for ``r``, then reads r's
  record;
- t=1 the record says ``running``: it sleeps on the future;
- t=2 r ends: the result is written and the notice published together, and the notice wakes the future.

An end at any time after t=0 is published to a live subscription, and an end before t=0 is in the record read
at t=0. A notice lost with a dropped connection is covered too: when the subscription is confirmed again,
``on_resubscribed`` runs (``RunWaiters`` wakes every waiter to read its record again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("barrierflow.broker")


class Subscription:
    """A pub/sub channel, re-subscribed after a connection loss; ``on_message`` gets each message as text."""

    def __init__(
        self,
        client: Redis,
        channel: str,
        on_message: Callable[[str], None],
        *,
        idle_timeout: float,
        on_resubscribed: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._idle_timeout = idle_timeout  # a read waiting longer than the socket timeout would fail
        self.confirmed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        """Subscribe (once) and wait until Redis confirmed it: from then on no message is missed."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._listen())
        await self.confirmed.wait()

    async def _listen(self) -> None:
        failures = 0
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=self._idle_timeout)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        if failures and self._on_resubscribed is not None:
                            self._on_resubscribed()  # messages may have been lost while it was down
                        failures = 0
                        self.confirmed.set()
                    elif message["type"] == "message":
                        data = message["data"]
                        self._on_message(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisError, OSError) as exc:
                self.confirmed.clear()
                failures += 1
                logger.warning(
                    "subscription to %s lost (%s: %s); subscribing again",
                    self._channel,
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            # bounded: a read on a connection whose pool was closed under it may not end at once
            await asyncio.wait([task], timeout=2.0)


class RunWaiters:
    """The local futures waiting for runs to end, woken by the notices of one ``Subscription``."""

    def __init__(self, client: Redis, channel: str, idle_timeout: float) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._subscription = Subscription(
            client, channel, self._wake, idle_timeout=idle_timeout, on_resubscribed=self._wake_all
        )

    async def watch(self, run_id: str) -> asyncio.Future[None]:
        """A future done when a notice for ``run_id`` arrives (or the subscription was re-made)."""
        await self._subscription.ready()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(run_id, set()).add(future)
        return future

    def forget(self, run_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(run_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[run_id]

    def _wake(self, run_id: str) -> None:
        for future in self._waiting.pop(run_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for run_id in list(self._waiting):
            self._wake(run_id)

    async def aclose(self) -> None:
        await self._subscription.aclose()
        self._wake_all()
