"""Threads that run sync handlers, so a handler's CPU time never stops the event loop.

Why sync handlers do not run on the loop: one loop drives every run of a process (a coordinator service holds
thousands), and it also renews their leases. A sync handler that computes or blocks for 3 s on the loop thread
freezes all of it:

- time 0: run A's lease (TTL 1 s) is renewed; A's sync handler starts on the loop thread and computes;
- time 1: A's lease expires, nobody could renew it; run B, on the same loop, has not advanced either;
- time 3: the handler returns; A's barrier finds its lease gone (``ReservationLostError``) and B lost 3 s.

On a thread the GIL still lets the loop run every few milliseconds (``sys.getswitchinterval``), so leases are
renewed, other runs advance, Ctrl-C cancels the run at once, and a timeout can end an attempt at its deadline.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined when the interpreter exits, so a
process interrupted during a long sync handler would hang until the handler returned. These threads are
daemons: an interrupted process exits with its instance at the last barrier, which is what Ctrl-C promises.
A thread cannot be stopped from outside, so a handler that the run stopped waiting for (cancelled, timed out)
runs on to its end in the background; whatever it does through its context is discarded.

The pool is bounded: ``BARRIERFLOW_SYNC_THREADS`` (default ``min(32, cpu count + 4)``, as the standard pool) for
the process-wide default, or ``LocalDispatcher(sync_threads=n)``. Work beyond that waits for a free thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

ENV_SYNC_THREADS = "BARRIERFLOW_SYNC_THREADS"


def default_size() -> int:
    """Threads of the process-wide pool: ``BARRIERFLOW_SYNC_THREADS``, else ``min(32, cpu count + 4)``."""
    configured = os.environ.get(ENV_SYNC_THREADS, "").strip()
    if configured:
        try:
            size = int(configured)
        except ValueError:
            size = 0
        if size < 1:
            raise ValueError(f"{ENV_SYNC_THREADS} must be a positive number of threads, not {configured!r}")
        return size
    return min(32, (os.cpu_count() or 1) + 4)


class HandlerThreads(Executor):
    """A bounded pool of daemon threads, started as work arrives (``loop.run_in_executor`` accepts it)."""

    def __init__(self, max_threads: int, name: str = "barrierflow-sync") -> None:
        if max_threads < 1:
            raise ValueError(f"a thread pool needs at least one thread, not {max_threads!r}")
        self.max_threads = max_threads
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            return self.submit(lambda: fn(*args, **kwargs))
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot run a handler: its thread pool was shut down")
            self._work.put((future, fn, args))
            if self._idle:
                self._idle -= 1  # that thread takes it
            elif self._threads < self.max_threads:
                self._threads += 1
                threading.Thread(
                    target=self._serve, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args  # drop references before waiting again
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once they are idle (``wait`` is ignored: handlers are never waited for)."""
        with self._lock:
            self._shutdown = True
            for _ in range(self._threads):
                self._work.put(None)


_default: tuple[int, HandlerThreads] | None = None
_default_lock = threading.Lock()


def default_threads() -> HandlerThreads:
    """The process-wide pool (a new one in a forked child: threads do not survive ``fork``)."""
    global _default
    pid = os.getpid()
    current = _default
    if current is not None and current[0] == pid:
        return current[1]
    with _default_lock:
        if _default is None or _default[0] != pid:
            _default = (pid, HandlerThreads(default_size()))
        return _default[1]
