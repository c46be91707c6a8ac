"""One value per running event loop, closed when that loop shuts down: redis.asyncio clients belong to a loop.

A program may well call ``asyncio.run()`` many times with the same store or dispatcher (a sync CLI, a test, a
script, a web framework's worker threads). A client whose connections were opened in one loop fails in the
next ("attached to a different loop", "Event loop is closed"), so each loop gets its own, made on first use.

Closing them matters as much: a client left behind by a finished loop keeps its server connections open, and
its connections reference the dead loop, so nothing is ever collected (20 ``asyncio.run()`` calls left 20
clients and 20 server connections). Each value is therefore closed by the loop that made it, at the latest
when that loop shuts down:

* ``aclose()`` (the owner's ``aclose``/``async with``) closes the running loop's value now;
* a loop that ends without it (``asyncio.run``, ``asyncio.Runner``, pytest-asyncio) closes the value in its
  own shutdown: ``get`` starts a small async generator in the loop, and every such runner calls
  ``loop.shutdown_asyncgens()`` before closing the loop, which runs the generator's ``finally``;
* a loop closed without ``shutdown_asyncgens`` (hand-made loops) cannot run a coroutine any more: its value
  is dropped at the next ``get``/``aclose`` so that its sockets are collected rather than kept forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``get()`` returns this loop's value, made by ``factory`` on first use and closed with ``close``."""

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._factory = factory
        self._close = close
        # loop -> (value, the generator that closes it at the loop's shutdown); keyed by the loop object
        # itself and pruned when a loop is closed (a value references its loop, so weak keys would never die)
        self._values: dict[asyncio.AbstractEventLoop, tuple[T, AsyncIterator[None]]] = {}

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        entry = self._values.get(loop)
        if entry is None:
            self._prune()
            value = self._factory()
            entry = self._values[loop] = (value, self._closer(loop, value))
        return entry[0]

    def __len__(self) -> int:
        """Values alive (of loops not closed yet)."""
        self._prune()
        return len(self._values)

    async def aclose(self) -> None:
        """Close the running loop's value now (a later ``get`` makes a new one)."""
        self._prune()
        entry = self._values.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()  # runs its ``finally``: closes the value

    def _prune(self) -> None:
        for loop in [loop for loop in self._values if loop.is_closed()]:
            del self._values[loop]

    def _closer(self, loop: asyncio.AbstractEventLoop, value: T) -> AsyncIterator[None]:
        """An async generator, started now, whose ``finally`` closes ``value`` when ``loop`` shuts down."""

        async def close_at_shutdown() -> AsyncIterator[None]:
            try:
                yield
            finally:
                if self._values.get(loop, (None,))[0] is value:
                    del self._values[loop]
                await self._close(value)

        closer = close_at_shutdown()
        # Run it to its ``yield`` now, synchronously (nothing before it awaits): asyncio's first-iteration
        # hook registers it with the running loop, whose ``shutdown_asyncgens`` will ``aclose`` it.
        with contextlib.suppress(StopIteration):
            closer.__anext__().send(None)  # type: ignore[attr-defined]
        return closer
