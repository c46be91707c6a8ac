"""Following instance event streams: one blocking ``XREAD`` per process and event loop, however many followers.

A web server may have 200 clients following one instance (Server-Sent Events) and more following others. One
``XREAD BLOCK`` per follower would hold 200 connections and read every entry 200 times. Instead each
``RunQueue`` has one ``StreamReader`` per event loop: a dedicated connection blocks on ``XREAD`` over every
followed stream at once and hands each entry to the followers of its stream.

How a follower never misses an entry nor sees one twice (its ``cursor`` is the last id it delivered):

1. **Catch up alone.** It reads ``XRANGE (cursor +`` in pages until a page comes back empty: it is at the tail.
2. **Join the reader.** It registers with its cursor and the reader's blocking read is interrupted
   (``CLIENT UNBLOCK``), so the next ``XREAD`` includes its stream from the smallest cursor of that stream's
   followers. Entries added between step 1 and the join are read then: none is lost.
3. **Deliver after the cursor only.** The reader hands each follower the entries whose id is greater than its
   cursor (an entry another follower's older cursor made it read again is not delivered twice).
4. **Fall behind, catch up alone again.** A follower whose queue holds too many batches (a slow client) is
   detached and goes back to step 1 from its cursor, so it never makes the reader wait or buffer without bound.

Stream ids are compared as ``(milliseconds, sequence)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("barrierflow.broker")

#: Entries per ``XRANGE`` page and per ``XREAD``.
PAGE = 500
#: A follower with this many undelivered batches is detached and catches up by itself.
MAX_QUEUED_BATCHES = 64

Entry = tuple[bytes, dict[bytes, bytes]]


def parse_id(event_id: str | bytes) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a comparable pair (``ValueError`` for anything else)."""
    text = event_id.decode() if isinstance(event_id, bytes) else str(event_id)
    ms, sep, seq = text.partition("-")
    if not ms.isdigit() or (sep and not seq.isdigit()):
        raise ValueError(f"{event_id!r} is not an event id (<milliseconds>-<sequence>, like 1700000000000-0)")
    return int(ms), int(seq or 0)


class Follower:
    """One consumer of one stream: its cursor and the batches the reader handed it."""

    __slots__ = ("attached", "cursor", "key", "queue")

    def __init__(self, key: str, cursor: str) -> None:
        self.key = key
        self.cursor = cursor
        self.queue: asyncio.Queue[list[Entry]] = asyncio.Queue()
        self.attached = False


class StreamReader:
    """The one blocking ``XREAD`` of a process and loop, fanning entries out to ``Follower``s."""

    def __init__(self, waiting: Redis, client: Redis, block_ms: int) -> None:
        # One connection of the pool for waits, held while blocked (``client`` sends the unblocks).
        self._reader = Redis(connection_pool=waiting.connection_pool, single_connection_client=True)
        self._client = client
        self._block_ms = block_ms
        self._followers: dict[str, set[Follower]] = {}
        self._reader_id: int | None = None
        self._blocked = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def attach(self, follower: Follower) -> None:
        follower.attached = True
        self._followers.setdefault(follower.key, set()).add(follower)
        self._wake()

    def detach(self, follower: Follower) -> None:
        """Stop handing ``follower`` entries. The last follower of a stream takes the stream out of the
        blocked ``XREAD`` at once (and the last follower of all ends it): a client that went away leaves
        no read blocked on its behalf for the rest of the block time."""
        follower.attached = False
        followers = self._followers.get(follower.key)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[follower.key]
                if self._task is not None and not self._task.done():
                    self._wake()

    def _wake(self) -> None:
        """Make the loop re-read its set of streams now (interrupting a blocked ``XREAD``)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        elif not self._changed.is_set():
            self._changed.set()
            unblocking = asyncio.ensure_future(self._unblock())
            unblocking.add_done_callback(_ignore_result)

    async def _unblock(self) -> None:
        """``CLIENT UNBLOCK`` the reader until its loop has seen the change.

        Repeated because the unblock may reach Redis just before the ``XREAD`` it should interrupt.
        """
        while self._changed.is_set() and self._task is not None and not self._task.done():
            reader = self._reader_id if self._blocked else None
            if reader is not None and await self._client.client_unblock(reader):
                return
            await asyncio.sleep(0.005)

    async def _run(self) -> None:
        failures = 0
        while self._followers:
            self._changed.clear()
            streams = {key: _min_cursor(followers) for key, followers in self._followers.items()}
            try:
                if self._reader_id is None:
                    self._reader_id = await self._reader.client_id()
                self._blocked = True
                try:
                    reply = await self._reader.xread(streams, count=PAGE, block=self._block_ms)
                finally:
                    self._blocked = False
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                logger.warning("event stream reader: %s: %s (retrying)", type(exc).__name__, exc)
                self._reader_id = None
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            for key, entries in _by_stream(reply):
                for follower in list(self._followers.get(key, ())):
                    self._hand(follower, entries)

    def _hand(self, follower: Follower, entries: list[Entry]) -> None:
        after = parse_id(follower.cursor)
        new = [entry for entry in entries if parse_id(entry[0]) > after]
        if not new:
            return
        if follower.queue.qsize() >= MAX_QUEUED_BATCHES:  # a slow consumer: it catches up by itself
            self.detach(follower)
            follower.queue.put_nowait([])  # wakes it; an empty batch means "read from your cursor"
            return
        follower.cursor = new[-1][0].decode()
        follower.queue.put_nowait(new)

    async def aclose(self) -> None:
        self._followers.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=2.0)  # bounded, as ``Subscription.aclose``
        with contextlib.suppress(RedisError, OSError):
            await self._reader.aclose()


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an unblock that failed is harmless (the read ends by its timeout)


def _min_cursor(followers: set[Follower]) -> str:
    return min((f.cursor for f in followers), key=parse_id)


def _by_stream(reply: Any) -> list[tuple[str, list[Entry]]]:
    """XREAD's reply as redis-py parses it (RESP2: ``[[key, entries]]``; RESP3: ``{key: [entries]}``)."""
    if not reply:
        return []
    pairs = [(k, v[0] if v else []) for k, v in reply.items()] if isinstance(reply, dict) else reply
    return [(key.decode() if isinstance(key, bytes) else key, entries) for key, entries in pairs]


async def follow_stream(
    client: Redis,
    reader: Callable[[], StreamReader],
    key: str,
    after: str,
    *,
    live: bool,
    at_tail: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[Entry]:
    """Entries of stream ``key`` after id ``after``: those kept now, then (``live``) new ones as they come.

    ``at_tail`` is asked each time the follower has caught up by itself (before it joins the reader);
    ``True`` ends the iteration. The caller ends it too, by leaving the ``async for``.
    """
    parse_id(after)  # a bad cursor is the caller's error, before anything is read
    follower = Follower(key, after)
    try:
        while True:
            page = await client.xrange(key, min=f"({follower.cursor}", count=PAGE)
            if page:
                follower.cursor = page[-1][0].decode()
                for entry in page:
                    yield entry
                continue
            if (at_tail is not None and await at_tail()) or not live:
                return
            reader().attach(follower)
            while follower.attached or not follower.queue.empty():
                batch = await follower.queue.get()
                if not batch:  # detached for falling behind: catch up from the cursor
                    break
                for entry in batch:
                    yield entry
    finally:
        if follower.attached:
            reader().detach(follower)
