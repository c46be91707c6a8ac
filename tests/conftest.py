"""Shared fixtures: one ``store`` fixture parametrized over every store, and a real Redis for integration.

Real-Redis tests must run in CI: the fixture uses ``BARRIERFLOW_TEST_REDIS_URL`` (default the local server on
127.0.0.1:6379), starts a private ``redis-server`` when none answers, and only outside CI skips when neither is
possible. Every test gets its own key prefix and deletes only its own keys (never FLUSHALL a shared server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from barrierflow.engine.memory_store import MemoryStore
from barrierflow.engine.store import Store
from tests.redis_hygiene import SESSION, forget_celery_nodes, leftovers

IN_CI = bool(os.environ.get("CI"))


def _answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server for this test session; at its end, no key of the session may remain."""
    url = os.environ.get("BARRIERFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _answers(url):
        yield from _checked_clean(url)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail(f"no Redis answers at {url} and redis-server is not installed; CI needs one")
        pytest.skip(f"no Redis answers at {url} and redis-server is not installed")
    proc, url = start_redis_server(binary)
    try:
        yield from _checked_clean(url, private=True)
    finally:
        proc.terminate()
        proc.wait(5)


def start_redis_server(binary: str, *options: str) -> tuple[subprocess.Popen, str]:
    """A redis-server of this session alone on a free port, without persistence, once it answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return proc, url


def _keys_without_ttl(url: str) -> set[bytes]:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
        ttls = pipe.execute()
    client.close()
    return {key for key, ttl in zip(keys, ttls, strict=True) if ttl == -1}


def _checked_clean(url: str, *, private: bool = False) -> Iterator[str]:
    """Yield ``url``; afterwards fail the session if a key of it remains (``tests/redis_hygiene.py``).

    Where this session is the only user of the Redis (CI, or a server it started), also every key without a
    TTL that was not there before: whatever its name, it has no owner.
    """
    strict = IN_CI or private
    before = _keys_without_ttl(url) if strict else set()
    yield url
    forget_celery_nodes(url, [])  # the sweep deadlines our workers' bindings left
    left = leftovers(url)
    if strict:
        left += sorted(key.decode(errors="replace") for key in _keys_without_ttl(url) - before)
    assert not left, f"the test session left these in Redis {url}: {left}"


@pytest.fixture
def key_prefix() -> str:
    return f"bftest-{SESSION}-{uuid.uuid4().hex[:8]}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete this test's keys only."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def real_redis_prefix(redis_url: str, key_prefix: str) -> Iterator[str]:
    """A key prefix on the real Redis whose keys are removed after the test."""
    yield key_prefix
    delete_prefix(redis_url, key_prefix)


STORE_KINDS = ["memory", "fakeredis", "redis"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(store_kind: str, request: pytest.FixtureRequest):
    """Every store implementation, so one behaviour suite checks them all (the conformance suite)."""

    if store_kind == "memory":
        yield MemoryStore()
        return
    from barrierflow.broker import RedisStore

    if store_kind == "fakeredis":
        import fakeredis

        yield RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), prefix="bftest")
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("real_redis_prefix")
    redis_store = RedisStore.from_url(url, prefix=prefix)
    yield redis_store
    await redis_store.aclose()


MakeStore = Callable[..., Store]


@pytest.fixture
async def make_store(store_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Build stores of the current kind with other options; stores made in one test share one backend."""
    created: list[Any] = []
    server = None

    def make(**options: Any) -> Store:
        nonlocal server
        if store_kind == "memory":
            return MemoryStore(**options)
        from barrierflow.broker import RedisStore

        if store_kind == "fakeredis":
            import fakeredis

            server = server or fakeredis.FakeServer()
            return RedisStore(fakeredis.FakeAsyncRedis(server=server), prefix="bftest", **options)
        url = request.getfixturevalue("redis_url")
        new = RedisStore.from_url(url, prefix=request.getfixturevalue("real_redis_prefix"), **options)
        created.append(new)
        return new

    yield make
    for made in created:
        await made.aclose()
