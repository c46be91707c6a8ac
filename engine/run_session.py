"""The objects ``run()`` and ``stream()`` return, and why they are not plain coroutines.

The instance is reserved when ``run()``/``stream()`` is *called*. If the caller then drops what it got
without awaiting or iterating it, nothing would ever run the generator's ``finally`` — so these wrappers
release the reservation from ``__del__``. The release is compare-and-delete on the run's own token:

- time 0: stream A is iterated halfway, then dropped; its ``__del__`` releases A's token at once;
- time 1: run B reserves the instance (token b) and starts;
- time 2: the event loop finalises A's generator; its ``finally`` releases token a — which no longer holds
  anything, so B's reservation stays.
"""

from __future__ import annotations

import collections.abc
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from .events import EventType, RunResult, WorkflowEvent


class RunSession:
    """One reserved run: its event generator, the events seen so far, and how to release it early."""

    def __init__(
        self,
        events: AsyncGenerator[WorkflowEvent, None],
        release: Callable[[], None],
        result: Callable[[list[WorkflowEvent]], RunResult],
    ) -> None:
        self.events = events
        self.seen: list[WorkflowEvent] = []
        self._release = release
        self._result = result
        self.finished = False

    def abandon(self) -> None:
        """Release the reservation now (compare-and-delete); a later cleanup of the generator is harmless."""
        if not self.finished:
            self.finished = True
            self._release()

    async def next_event(self) -> WorkflowEvent:
        try:
            event = await self.events.__anext__()
        except BaseException:
            self.finished = True
            raise
        self.seen.append(event)
        return event

    async def collect(self) -> RunResult:
        seen = self.seen
        try:
            async for event in self.events:  # no per-event wrapper: this is the path every run() takes
                seen.append(event)
        finally:
            self.finished = True
        return self._result(seen)


class RunCall(collections.abc.Coroutine):  # type: ignore[type-arg]
    """The awaitable ``run()`` returns. A real ``Coroutine``, so ``asyncio.create_task(wf.run(x))`` works."""

    def __init__(self, session: RunSession) -> None:
        self._session = session
        self._coro: collections.abc.Coroutine[Any, Any, RunResult] | None = None

    def _inner(self) -> collections.abc.Coroutine[Any, Any, RunResult]:
        if self._coro is None:
            self._coro = self._session.collect()
        return self._coro

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self._inner().__await__()

    def send(self, value: Any) -> Any:
        return self._inner().send(value)

    def throw(self, *args: Any) -> Any:
        return self._inner().throw(*args)

    def close(self) -> None:
        if self._coro is None:
            self._session.abandon()
        else:
            self._coro.close()

    def __del__(self) -> None:
        if self._coro is None:
            self._session.abandon()


class WorkflowStream:
    """The async iterator ``stream()`` returns; ``await stream.result()`` finishes it and gives the result."""

    def __init__(self, session: RunSession) -> None:
        self._session = session

    def __aiter__(self) -> WorkflowStream:
        return self

    async def __anext__(self) -> WorkflowEvent:
        return await self._session.next_event()

    async def result(self) -> RunResult:
        """Consume whatever is left of the stream, then return the ``RunResult``."""
        return await self._session.collect()

    async def aclose(self) -> None:
        self._session.abandon()
        await self._session.events.aclose()

    @property
    def events(self) -> list[WorkflowEvent]:
        """The events iterated so far."""
        return list(self._session.seen)

    def __del__(self) -> None:
        self._session.abandon()


def outputs_of(events: list[WorkflowEvent]) -> list[Any]:
    return [event.data for event in events if event.type == EventType.OUTPUT]
