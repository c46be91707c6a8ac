"""``ScriptBatcher``: Lua calls made by many runs in one event-loop turn go to Redis as one pipeline.

A coordinator drives hundreds of runs on one event loop, and each of them makes a few script calls per
superstep (commit, flush, finish). Sent one by one, every call pays a round trip and redis-py's per-call
overhead (a pool checkout, a socket write, a wake-up per reply). Here a call only queues; at the end of the
current loop turn everything queued goes out as one pipeline, and every caller gets its own reply (or its own
error: ``raise_on_error=False``). Under load the runs synchronise by themselves: the replies of one batch
resume their callers in the same turn, and their next calls form the next batch. A lone call costs what a
direct call costs, plus one ``call_soon``.

The pipeline sends plain ``EVALSHA`` of each script's SHA-1 (redis-py's pipelines would add a ``SCRIPT EXISTS``
round trip to every batch); a ``NOSCRIPT`` reply (the first use, a restarted or flushed Redis) loads the
scripts and retries those calls once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from .scripts import script_source

#: Calls per pipeline at most; a bigger backlog goes out as several pipelines, concurrently.
MAX_BATCH = 512

_Call = tuple[str, Sequence[Any], Sequence[Any], asyncio.Future[Any]]


class ScriptBatcher:
    """Batches calls of the named scripts (``broker/<name>.lua``) made on one event loop."""

    def __init__(self, client: Callable[[], Redis], names: Sequence[str]) -> None:
        self._client = client
        self._sources = {name: script_source(name) for name in names}
        self._shas = {
            name: hashlib.sha1(source.encode()).hexdigest() for name, source in self._sources.items()
        }
        self._queue: list[_Call] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run script ``name`` with ``keys`` and ``args`` in the next batch; its reply, or its error raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((name, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), MAX_BATCH):
            task = asyncio.ensure_future(self._send(queue[start : start + MAX_BATCH]))
            self._sending.add(task)  # keep a reference until it is done
            task.add_done_callback(self._sending.discard)

    async def _load(self, client: Redis) -> None:
        for source in self._sources.values():
            await client.script_load(source)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            client = self._client()
            replies = await self._pipeline(client, calls)
            retry = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if retry:
                await self._load(client)
                again = await self._pipeline(client, [calls[i] for i in retry])
                for i, reply in zip(retry, again, strict=True):
                    replies[i] = reply
        except (
            BaseException
        ) as exc:  # connection lost, timeout, cancelled: every caller of the batch hears it
            for *_, future in calls:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(calls, replies, strict=True):
            if future.done():  # its caller gave up (cancelled): the reply is not wanted
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, client: Redis, calls: list[_Call]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for name, keys, args, _ in calls:
                pipe.evalsha(self._shas[name], len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
