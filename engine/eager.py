"""Start coroutines eagerly: run each until it first suspends, and only then give it a Task.

Most handlers of a superstep finish without ever suspending (they compute and send). Creating a Task for each
costs a loop turn and several allocations, which dominated wide supersteps. This is what Python 3.12's
``asyncio.eager_task_factory`` does; it is written out here because barrierflow supports 3.11.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class _Resume:
    """Awaitable that continues a coroutine already started by hand, from the value it yielded."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # cancellation (or a thrown error) goes into the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await _Resume(coro, yielded)


def start_eagerly(coro: Coroutine[Any, Any, T]) -> tuple[asyncio.Task[T] | None, T | None]:
    """Run ``coro`` now: ``(None, its result)`` if it finished, else ``(a Task that continues it, None)``.

    Its exceptions propagate from this call when it fails before suspending.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        return None, done.value
    return asyncio.get_running_loop().create_task(_finish(coro, yielded)), None
