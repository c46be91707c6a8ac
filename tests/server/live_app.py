"""A real HTTP server for browser tests: uvicorn serving ``create_app`` on a free port, and a ``Coordinator``
that runs the submitted workflows, both on one event loop in a background thread, on the real Redis.

In-process rather than ``barrierflow serve`` subprocesses: the browser talks to a real socket either way, and
starting takes a fraction of a second instead of two interpreter start-ups (the suite's time budget is tight).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

import uvicorn

from barrierflow.broker import RedisStore, RunQueue
from barrierflow.server import create_app
from barrierflow.workers import Coordinator


class LiveApp:
    """``with LiveApp(redis_url, prefix) as live: live.url`` -> ``http://127.0.0.1:<port>``."""

    def __init__(self, redis_url: str, prefix: str, *, token: str | None = None) -> None:
        self.redis_url, self.prefix, self.token = redis_url, prefix, token
        self.url = ""
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-app", daemon=True)

    def __enter__(self) -> LiveApp:
        host, port = self._sock.getsockname()
        self.url = f"http://{host}:{port}"
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            self.__exit__()
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to the test thread by __enter__
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        store = RedisStore.from_url(self.redis_url, prefix=self.prefix, lock_ttl=5.0)
        coordinator = Coordinator(store, concurrency=8, shutdown_grace=5.0)
        app = create_app(runs=RunQueue(store), token=self.token)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        )
        serving = asyncio.ensure_future(server.serve(sockets=[self._sock]))
        coordinating = asyncio.ensure_future(coordinator.serve(handle_signals=False))
        try:
            while not server.started:
                if serving.done():
                    serving.result()  # raises why it stopped
                await asyncio.sleep(0.01)
            self._ready.set()
            await self._stop.wait()
        finally:
            server.should_exit = True
            await coordinator.aclose()
            for task in (serving, coordinating):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 15)
            await store.aclose()
