"""Fixtures of the run queue tests: a store and a queue on the real Redis (own prefix), coordinators in this
process, and coordinator processes started exactly as in production (``barrierflow coordinator``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.queue_flows  # noqa: F401 - registers the queue tests' workflows in this process too
from barrierflow.broker import RedisStore, RunQueue
from barrierflow.workers import Coordinator
from tests.conftest import delete_prefix
from tests.workflows_for_workers import SIDE_PREFIX, _side_client

ROOT = Path(__file__).resolve().parents[2]
IMPORTS = ["tests.workflows_for_workers", "tests.queue_flows"]


@pytest.fixture(autouse=True)
def side_channel(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The handlers' side channel (``tests.workflows_for_workers.side``) on the session's Redis, also in this
    process (its client is cached per process: an earlier test may have made it for another Redis)."""
    monkeypatch.setenv("BARRIERFLOW_REDIS_URL", redis_url)
    _side_client.cache_clear()
    yield
    _side_client.cache_clear()


@pytest.fixture
async def qstore(redis_url: str, real_redis_prefix: str) -> AsyncIterator[RedisStore]:
    # named after its prefix: a test counting connections must not count other processes' on the shared Redis
    store = RedisStore.from_url(
        redis_url, prefix=real_redis_prefix, lock_ttl=3.0, client_name=real_redis_prefix
    )
    yield store
    await store.aclose()


@pytest.fixture
async def runs(qstore: RedisStore) -> AsyncIterator[RunQueue]:
    async with RunQueue(qstore) as queue:
        yield queue


StartCoordinator = Callable[..., Awaitable[Coordinator]]


@pytest.fixture
async def coordinators(qstore: RedisStore) -> AsyncIterator[StartCoordinator]:
    """``await start(**options)``: a ``Coordinator`` serving in this process; all stopped after the test."""
    serving: list[tuple[Coordinator, asyncio.Task[None]]] = []

    async def start(store: RedisStore | None = None, **options: Any) -> Coordinator:
        options.setdefault("shutdown_grace", 5.0)
        coordinator = Coordinator(store or qstore, **options)
        task = asyncio.ensure_future(coordinator.serve(handle_signals=False))
        serving.append((coordinator, task))
        return coordinator

    yield start
    for coordinator, task in serving:
        await coordinator.aclose()
        await asyncio.wait_for(task, 30)


class CoordinatorProcesses:
    """``barrierflow coordinator`` processes of one test (each in its own process group); stopped at the end."""

    def __init__(self, redis_url: str, prefix: str, logs: Path) -> None:
        self.redis_url, self.prefix, self.logs = redis_url, prefix, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *options: str, poison: bool = False) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "BARRIERFLOW_REDIS_URL": self.redis_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "BFTEST_POISON": "1" if poison else "0",
        }
        argv = [sys.executable, "-m", "barrierflow.cli.main", "coordinator", "--redis", self.redis_url]
        argv += ["--prefix", self.prefix, "--log-level", "INFO"]
        for module in IMPORTS:
            argv += ["--import", module]
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the process
        proc = subprocess.Popen(
            [*argv, *options], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log_of(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-6000:]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.procs[name].pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def coordinator_procs(
    redis_url: str, real_redis_prefix: str, tmp_path: Path
) -> Iterator[CoordinatorProcesses]:
    procs = CoordinatorProcesses(redis_url, real_redis_prefix, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(autouse=True)
def clean_side_channel(redis_url: str, real_redis_prefix: str) -> Iterator[None]:
    """Side-channel keys of this test's instances (their ids start with the test's prefix)."""
    yield
    delete_prefix(redis_url, f"{SIDE_PREFIX}:{real_redis_prefix}")


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
