"""Deadlines of async attempts: one timer per superstep, armed only while a timed handler is suspended.

Why not ``asyncio.timeout()`` or ``asyncio.wait_for()`` around each handler: most handlers finish without ever
suspending (they compute and send), and batches start eagerly (``engine/eager.py``), outside any Task of their
own, so ``asyncio.timeout()`` would cancel the wrong task, and a Task plus a timer per delivery would cost more
than the delivery. Instead each batch has an ``AttemptClock``: the batch writes the running attempt's deadline
into it (and clears it after). A batch that never suspends is never
watched and never costs a timer. Once it suspends, the dispatcher gets its Task and hands the clock (the
batch's ``ExecutorView``) to the superstep's ``Watchdog``, which keeps one timer at the earliest deadline of the clocks it watches:

- time 0: batch A (timeout 5 s) starts an attempt; its handler awaits a slow HTTP call; A becomes a Task, the
  watchdog arms its timer for time 5;
- time 2: batch B (timeout 1 s), already a Task, starts an attempt: deadline 3 < 5, the timer moves to 3;
- time 3: B's attempt is still running: the watchdog marks B's clock expired and cancels B's Task; B's handler
  gets ``CancelledError`` at its await (its ``finally`` blocks run), and the batch turns that into
  ``TimeoutError`` (``AttemptClock.timed_out``), an ordinary retryable failure; the timer moves to 5.
"""

from __future__ import annotations

import asyncio
import math
import time


class AttemptClock:
    """The deadline of the attempt a batch is in (``None`` between attempts), and who enforces it.

    ``engine.context.ExecutorView`` is one (a batch already makes one view), so a timed batch allocates nothing
    more; its ``__init__`` sets these four fields itself, on the hot path.
    """

    __slots__ = ("deadline", "expired", "task", "watchdog")

    deadline: float | None  # time.monotonic() seconds
    expired: bool
    task: asyncio.Task[None] | None
    watchdog: Watchdog | None  # set once the batch runs as a Task

    def start(self, timeout: float) -> None:
        """An attempt starts: it must end within ``timeout`` seconds."""
        deadline = self.deadline = time.monotonic() + timeout
        watchdog = self.watchdog
        if watchdog is not None and deadline < watchdog.when:
            watchdog.arm(deadline)

    def timed_out(self) -> bool:
        """After ``CancelledError`` reached the attempt: whether the watchdog sent it (then it is taken back).

        A cancellation from elsewhere (a sibling failed, the run was cancelled) stays a cancellation.
        """
        if not self.expired:
            return False
        self.expired = False
        task = self.task
        return task is not None and task.uncancel() == 0


class Watchdog:
    """Cancels the watched batches whose attempt passed its deadline; one timer for all of them."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._clocks: list[AttemptClock] = []
        self._timer: asyncio.TimerHandle | None = None
        self.when = math.inf

    def watch(self, clock: AttemptClock, task: asyncio.Task[None]) -> None:
        """``clock``'s batch has suspended and now runs as ``task``."""
        clock.task, clock.watchdog = task, self
        self._clocks.append(clock)
        if clock.deadline is not None and clock.deadline < self.when:
            self.arm(clock.deadline)

    def arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.when = deadline
        self._timer = self._loop.call_later(max(deadline - time.monotonic(), 0.0), self._fire)

    def _fire(self) -> None:
        self._timer, self.when = None, math.inf
        now = time.monotonic()
        earliest = math.inf
        for clock in self._clocks:
            deadline, task = clock.deadline, clock.task
            if deadline is None or task is None or task.done():
                continue
            if deadline <= now:
                if not clock.expired:
                    clock.expired = True
                    task.cancel()
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self.arm(earliest)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for clock in self._clocks:
            clock.watchdog = None
