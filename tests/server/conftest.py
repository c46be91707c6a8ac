"""Fixtures of the server tests: the app on the real Redis (own prefix) and coordinators in this process
(``tests/queue/conftest.py``'s), an in-process ASGI client, and the app served over TCP by uvicorn in the
test's own event loop (for event streams: the ASGI transport buffers whole responses)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

import tests.server.flows  # noqa: F401 - registers the workflows the tests submit
from barrierflow.server import create_app
from tests.queue.conftest import (  # noqa: F401 - fixtures shared with the run queue tests
    clean_side_channel,
    coordinator_procs,
    coordinators,
    qstore,
    runs,
    side_channel,
)

#: Keep-alive interval of the tests' event streams (seconds): short, so idle streams show their comments.
KEEPALIVE = 0.2


@pytest.fixture
def make_app(runs: Any) -> Callable[..., Any]:  # noqa: F811 - the imported fixture
    def make(**options: Any) -> Any:
        options.setdefault("keepalive", KEEPALIVE)
        return create_app(runs=runs, **options)

    return make


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as c:
        yield c


@pytest.fixture
async def coordinator(coordinators: Any) -> Any:  # noqa: F811 - the imported fixture
    return await coordinators()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``app`` served by uvicorn on 127.0.0.1 in the running loop; ``url`` once it listens."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def live(app: Any) -> AsyncIterator[LiveServer]:
    async with LiveServer(app) as server:
        yield server
