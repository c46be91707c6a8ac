"""One value per running event loop: redis.asyncio clients belong to the loop that opened their connections.

A program may well call ``asyncio.run()`` twice with the same store or dispatcher (a sync CLI, a test, a
script). A client whose connections were opened in the first loop fails in the second ("attached to a
different loop", "Event loop is closed"), so each loop gets its own, made on first use there.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``get()`` returns this loop's value, made by ``factory`` on first use; ``first`` serves the first loop."""

    def __init__(self, factory: Callable[[], T], first: T | None = None) -> None:
        self._factory = factory
        self._first = first
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value, self._first = (self._first, None) if self._first is not None else (self._factory(), None)
            self._values[loop] = value
        return value

    def pop(self) -> T | None:
        """Forget (and return) the running loop's value, to close it."""
        return self._values.pop(asyncio.get_running_loop(), None)
