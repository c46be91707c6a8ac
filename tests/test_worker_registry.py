"""The worker registry's records on a real Redis (``broker/worker_registry.py``), without Celery: entries, their
lapse by the server's clock, pruning, compare-and-delete, and keys that always expire."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from barrierflow.broker.worker_registry import (
    MISSED_BEATS,
    RegistryKeys,
    WorkerEntry,
    WorkerRegistration,
    WorkerRegistry,
    forget_worker,
    live_workers,
)


def entry(
    node: str, *queues: str, slots: int = 2, interval: float = 5.0, layout: str = "1:test"
) -> WorkerEntry:
    return WorkerEntry(
        node=node,
        queues=queues,
        slots=slots,
        host="h",
        pid=1234,
        started_at=time.time(),
        layout=layout,
        interval=interval,
        pool="prefork",
        version="0.1.0",
    )


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def registry_keys(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Every registry key under ``prefix`` and its PTTL."""
    return {key.decode(): client.pttl(key) for key in client.scan_iter(match=f"{prefix}:workers:*")}


async def test_an_entry_is_read_back_with_its_slots_and_queues(
    client: redis.Redis, redis_url: str, real_redis_prefix: str
) -> None:
    from barrierflow.broker import RedisStore

    prefix = real_redis_prefix
    w1 = WorkerRegistration(client, prefix, "w1@h")
    w2 = WorkerRegistration(client, prefix, "w2@h")
    assert w1.beat(entry("w1@h", "q1", "q2", slots=3)) is None
    assert w2.beat(entry("w2@h", "q1", slots=4)) is None

    assert [(w.node, w.slots) for w in live_workers(client, prefix, "q1")] == [("w1@h", 3), ("w2@h", 4)]
    [only] = live_workers(client, prefix, "q2")
    assert (only.node, only.queues, only.pool, only.layout, only.pid) == (
        "w1@h",
        ("q1", "q2"),
        "prefork",
        "1:test",
        1234,
    )
    assert 0 <= only.age < 5
    assert live_workers(client, prefix, "q3") == []

    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        registry = WorkerRegistry(store.client, prefix)
        assert [w.node for w in await registry.live("q1")] == ["w1@h", "w2@h"]
        by_queue = await registry.by_queue()
        assert {q: [w.node for w in ws] for q, ws in by_queue.items()} == {
            "q1": ["w1@h", "w2@h"],
            "q2": ["w1@h"],
        }
    finally:
        await store.aclose()

    ttl = MISSED_BEATS * 5.0 * 1000
    keys = registry_keys(client, prefix)
    assert set(keys) == {
        f"{prefix}:workers:{{{prefix}}}:{name}"
        for name in ("queues", "live:q1", "entry:q1", "live:q2", "entry:q2")
    }
    assert all(0 < pttl <= ttl for pttl in keys.values()), keys  # nothing without a TTL


def test_an_entry_lapses_by_the_servers_clock_and_the_next_beat_prunes_it(
    client: redis.Redis, real_redis_prefix: str
) -> None:
    prefix = real_redis_prefix
    WorkerRegistration(client, prefix, "dead@h").beat(entry("dead@h", "q", interval=0.1))  # lapses in 0.3 s
    survivor = WorkerRegistration(client, prefix, "alive@h")
    survivor.beat(entry("alive@h", "q", interval=30))
    assert {w.node for w in live_workers(client, prefix, "q")} == {"dead@h", "alive@h"}
    time.sleep(0.5)
    assert [w.node for w in live_workers(client, prefix, "q")] == ["alive@h"]  # not counted, pruned or not
    keys = RegistryKeys(prefix)
    assert client.hexists(keys.entries("q"), "dead@h")  # nobody beat since: still stored ...
    survivor.beat(entry("alive@h", "q", interval=30))
    assert not client.hexists(keys.entries("q"), "dead@h")  # ... until the next beat on the queue
    assert client.zrange(keys.live("q"), 0, -1) == [b"alive@h"]


def test_keys_vanish_with_their_last_entry(client: redis.Redis, real_redis_prefix: str) -> None:
    prefix = real_redis_prefix
    WorkerRegistration(client, prefix, "w@h").beat(entry("w@h", "q", interval=0.1))
    assert registry_keys(client, prefix)
    time.sleep(0.5)
    assert registry_keys(client, prefix) == {}  # a SIGKILLed fleet leaves nothing behind


def test_leaving_removes_only_this_registration(client: redis.Redis, real_redis_prefix: str) -> None:
    """Process A of node n hangs and lapses, B registers as n, A shuts down: B's entry must stay."""
    prefix = real_redis_prefix
    a = WorkerRegistration(client, prefix, "n@h")
    a.beat(entry("n@h", "q"))
    b = WorkerRegistration(client, prefix, "n@h")
    assert b.beat(entry("n@h", "q", slots=7)) is not None  # it saw A's live entry (a predecessor, or a twin)
    assert a.leave(["q"]) == 0
    assert [(w.node, w.slots) for w in live_workers(client, prefix, "q")] == [("n@h", 7)]
    twin = a.beat(entry("n@h", "q", slots=1))  # A beats again: it finds B's entry, so A warns of a twin
    assert twin is not None and twin.slots == 7
    assert a.leave(["q"]) == 1 and live_workers(client, prefix, "q") == []


def test_a_worker_that_stops_consuming_a_queue_leaves_it(client: redis.Redis, real_redis_prefix: str) -> None:
    prefix = real_redis_prefix
    w = WorkerRegistration(client, prefix, "w@h")
    w.beat(entry("w@h", "q1", "q2"))
    w.beat(entry("w@h", "q1"))
    w.leave(["q2"])
    assert [x.node for x in live_workers(client, prefix, "q2")] == []
    assert live_workers(client, prefix, "q1")[0].queues == ("q1",)
    assert forget_worker(client, prefix, "w@h", ["q1", "q2"]) == 1  # a killed worker's entry, any token
    assert registry_keys(client, prefix) == {
        f"{prefix}:workers:{{{prefix}}}:queues": pytest.approx(15000, abs=1000)
    }


async def test_registry_keys_are_no_instance_keys(
    client: redis.Redis, redis_url: str, real_redis_prefix: str
) -> None:
    """``delete_instance`` of an instance named like a registry key part leaves the registry alone."""
    from barrierflow.broker import RedisStore

    prefix = real_redis_prefix
    WorkerRegistration(client, prefix, "w@h").beat(entry("w@h", "q"))
    before = set(registry_keys(client, prefix))
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        for instance in ("workers", prefix, "queues"):
            await store.delete_instance(instance)
    finally:
        await store.aclose()
    assert set(registry_keys(client, prefix)) == before


def test_a_prefix_with_braces_is_refused(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="braces"):
        WorkerRegistration(client, "bad{prefix}", "w@h")
