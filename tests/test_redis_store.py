"""RedisStore beyond the shared contract: contention, fencing timelines, bad data, key layout, connections.

Parametrized over fakeredis (with Lua) and a real Redis; the contention test needs real processes and a real
server. The real-Redis cases use the per-test prefix of ``conftest.py`` and delete only their own keys.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from barrierflow.broker import RedisStore
from barrierflow.broker.keys import KeySpace
from barrierflow.broker.results import ResultKeys
from barrierflow.engine.checkpoint import Checkpoint, new_checkpoint_id
from barrierflow.engine.checkpoint_format import StateDelta, encode_record, head_fields
from barrierflow.engine.codec import register_type
from barrierflow.engine.errors import (
    CheckpointDecodeError,
    ReservationLostError,
    StoreError,
    WorkflowRunInProgressError,
)
from barrierflow.engine.store import Lease, new_token, owner_info

MakeStore = Callable[..., RedisStore]


@pytest.fixture(params=["fakeredis", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Build RedisStores on one backend (fakeredis with Lua, or the real server with this test's prefix)."""
    created: list[RedisStore] = []
    server = None

    def make(**options: Any) -> RedisStore:
        nonlocal server
        if request.param == "fakeredis":
            import fakeredis

            server = server or fakeredis.FakeServer()
            options.setdefault("prefix", "bftest")
            return RedisStore(fakeredis.FakeAsyncRedis(server=server), **options)
        options.setdefault("prefix", request.getfixturevalue("real_redis_prefix"))
        new = RedisStore.from_url(request.getfixturevalue("redis_url"), **options)
        created.append(new)
        return new

    yield make
    for made in created:
        await made.aclose()


def checkpoint(instance_id: str, **fields: Any) -> Checkpoint:
    return Checkpoint(new_checkpoint_id(instance_id), instance_id, "redis-tests", "sig-1", **fields)


async def all_keys(store: RedisStore) -> dict[bytes, bytes]:
    """Every key under the store's prefix with a dump of its value (to prove nothing else changed)."""
    return {
        key: await store.client.dump(key) async for key in store.client.scan_iter(match=f"{store.prefix}:*")
    }


# -- contention (real processes, real Redis) ----------------------------------------------------------------

ROUNDS = 200
PROCESSES = 8


def _contend(url: str, prefix: str, worker: int) -> list[tuple[float, float, bool]]:
    """One process: ROUNDS times reserve the shared instance (retrying while refused), hold, release."""

    async def rounds() -> list[tuple[float, float, bool]]:
        store = RedisStore.from_url(url, prefix=prefix, lock_ttl=10.0)
        held = []
        try:
            for _ in range(ROUNDS):
                while True:
                    try:
                        lease = await store.reserve("contended", new_token(), owner_info(f"w{worker}"))
                        break
                    except WorkflowRunInProgressError:
                        await asyncio.sleep(0.001)
                acquired = time.time()
                released_at = time.time()
                held.append((acquired, released_at, await store.release(lease)))
        finally:
            await store.aclose()
        return held

    return asyncio.run(rounds())


def test_contending_processes_never_hold_at_once(redis_url: str, real_redis_prefix: str) -> None:
    # fork: the children start at once (spawn would re-import this module 8 times on a small CI machine); the
    # parent holds no running event loop here, each child runs its own.
    context = multiprocessing.get_context("fork")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(_contend, [(redis_url, real_redis_prefix, w) for w in range(PROCESSES)])
    intervals = sorted(interval for per_process in results for interval in per_process)
    assert len(intervals) == PROCESSES * ROUNDS
    assert all(clean for _, _, clean in intervals), "a release did not find its own lease"
    for (_, previous_end, _), (start, _, _) in itertools.pairwise(intervals):
        assert start >= previous_end, "two processes held the instance at once"


# -- lease timelines -----------------------------------------------------------------------------------------


async def test_stale_release_and_write_change_nothing(make_store: MakeStore) -> None:
    store = make_store(lock_ttl=0.2)
    a = await store.reserve("inst", new_token(), owner_info("run-a"))
    await asyncio.sleep(0.3)  # A's lease expires
    b = await store.reserve("inst", new_token(), owner_info("run-b"))
    b_cp = checkpoint("inst", superstep=1)
    await store.save_checkpoint(b_cp, lease=b)
    before = await all_keys(store)

    assert await store.release(a) is False
    with pytest.raises(ReservationLostError):
        await store.save_checkpoint(checkpoint("inst", superstep=2), lease=a)
    assert a.lost
    assert await all_keys(store) == before
    info = await store.describe("inst")
    assert info.held
    assert info.owner["run_id"] == "run-b"
    assert await store.latest_id("inst") == b_cp.checkpoint_id
    assert await store.renew(b)


async def test_gc_paused_holder_is_fenced_out(make_store: MakeStore) -> None:
    """The timeline of engine/store.py: A pauses past its TTL, B takes over and writes, A wakes and writes."""
    coordinator_a, coordinator_b = make_store(lock_ttl=0.2), make_store(lock_ttl=0.2)
    a = await coordinator_a.reserve("inst", new_token(), owner_info("run-a"))
    await coordinator_a.save_checkpoint(checkpoint("inst", superstep=1), lease=a)
    await asyncio.sleep(0.3)  # A is "paused": no renewal, the lease expires
    b = await coordinator_b.reserve("inst", new_token(), owner_info("run-b"))
    assert b.epoch == a.epoch + 1
    b_cp = checkpoint("inst", superstep=2)
    await coordinator_b.save_checkpoint(b_cp, lease=b)

    a_cp = checkpoint("inst", superstep=2)
    with pytest.raises(ReservationLostError, match="inst"):
        await coordinator_a.save_checkpoint(a_cp, lease=a)
    assert a.lost
    assert await coordinator_a.latest_id("inst") == b_cp.checkpoint_id
    assert await coordinator_a.read_record(a_cp.checkpoint_id) is None


async def test_lock_deleted_behind_the_holders_back(make_store: MakeStore) -> None:
    store = make_store()
    lease = await store.reserve("inst", new_token(), owner_info("run"))
    await store.client.delete(store.keys.lock("inst"))
    assert await store.renew(lease) is False
    assert lease.lost
    with pytest.raises(ReservationLostError):
        await store.save_checkpoint(checkpoint("inst"), lease=lease)
    assert await store.list_ids("inst") == []


# -- keys of other components -------------------------------------------------------------------------------


async def test_other_components_get_keys_in_the_slot_but_never_the_stores_own(make_store: MakeStore) -> None:
    store = make_store()
    assert store.keys.user_key("inst", "bfw:res:1") == f"{store.prefix}:{{inst}}:bfw:res:1"
    for reserved in ("lock", "epoch", "index", "ckpt:x", "kf:x", ""):
        with pytest.raises(ValueError):
            store.keys.user_key("inst", reserved)


# -- bad data and backend failures ---------------------------------------------------------------------------


async def test_wrong_key_type_is_a_store_error_and_changes_nothing(make_store: MakeStore) -> None:
    store = make_store()
    await store.save_checkpoint(checkpoint("inst"))
    await store.client.delete(store.keys.index("inst"))
    await store.client.set(store.keys.index("inst"), b"not a sorted set")
    before = await all_keys(store)

    with pytest.raises(StoreError, match="list_ids of instance 'inst'") as caught:
        await store.list_ids("inst")
    assert caught.value.__cause__ is not None
    with pytest.raises(StoreError, match="latest_id"):
        await store.latest_checkpoint("inst")
    new_cp = checkpoint("inst")
    with pytest.raises(StoreError, match=f"write of checkpoint '{new_cp.checkpoint_id}'.*WRONGTYPE"):
        await store.save_checkpoint(new_cp)
    with pytest.raises(StoreError, match="delete of checkpoint"):
        await store.delete_checkpoint(new_checkpoint_id("inst"))
    assert await all_keys(store) == before

    await store.client.hset(store.keys.epoch("other"), "x", "1")
    with pytest.raises(StoreError, match="reserve of instance 'other'"):
        await store.reserve("other", new_token(), owner_info("run"))
    assert not await store.client.exists(store.keys.lock("other"))


@dataclass
class Marker:
    label: str


register_type(Marker, name="tests.broker.Marker")


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda head: b"\xc1\xff garbage", id="garbage"),
        pytest.param(lambda head: head[: len(head) // 2], id="truncated"),
        pytest.param(
            lambda head: head.replace(b"tests.broker.Marker", b"tests.broker.Markex"), id="unknown-type"
        ),
        pytest.param(lambda head: b"\x92\x01\x02", id="not-a-record"),
    ],
)
async def test_undecodable_head_raises_and_leaves_the_bytes(
    make_store: MakeStore, corrupt: Callable[[bytes], bytes]
) -> None:
    store = make_store()
    cp = checkpoint("inst", metadata={"marker": Marker("x")})
    await store.save_checkpoint(cp)
    head_key = store.keys.head("inst", cp.checkpoint_id)
    bad = corrupt(await store.client.get(head_key))
    await store.client.set(head_key, bad)
    before = await all_keys(store)

    with pytest.raises(CheckpointDecodeError):
        await store.load_checkpoint(cp.checkpoint_id)
    with pytest.raises(CheckpointDecodeError):
        await store.latest_checkpoint("inst")
    assert await store.client.get(head_key) == bad
    assert await all_keys(store) == before


async def test_corrupted_keyframe_raises_decode_error(make_store: MakeStore) -> None:
    store = make_store()
    cp = checkpoint("inst", executor_states={"a": 1})
    await store.save_checkpoint(cp)
    await store.client.set(store.keys.keyframe("inst", cp.checkpoint_id), b"\xc1")
    with pytest.raises(CheckpointDecodeError):
        await store.load_checkpoint(cp.checkpoint_id)
    await store.client.delete(store.keys.keyframe("inst", cp.checkpoint_id))
    with pytest.raises(CheckpointDecodeError, match="keyframe"):
        await store.load_checkpoint(cp.checkpoint_id)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_redis_is_a_store_error() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(StoreError, match="reserve of instance 'inst'") as caught:
            await store.reserve("inst", new_token(), owner_info("run"))
        assert isinstance(caught.value.__cause__, RedisConnectionError)
        with pytest.raises(StoreError, match="write of checkpoint"):
            await store.save_checkpoint(checkpoint("inst"))
        with pytest.raises(StoreError, match="list_ids"):
            await store.list_ids("inst")
        with pytest.raises(StoreError, match="release"):
            await store.release(Lease("inst", new_token(), 1, 1.0))
        with pytest.raises(StoreError, match="describe"):
            await store.describe("inst")
    finally:
        await store.aclose()


# -- key layout and TTLs -------------------------------------------------------------------------------------


async def test_every_key_carries_the_instance_hash_tag(make_store: MakeStore) -> None:
    store = make_store()
    lease = await store.reserve("job-42", new_token(), owner_info("run"))
    key = encode_record(
        head_fields(checkpoint("job-42")),
        keyframe_id="job-42@" + "0" * 20,
        shared_delta=StateDelta(),
        executor_delta=StateDelta(),
        keyframe_state=({}, {"a": 1}),
    )
    await store.write_record(key, lease)
    results = ResultKeys(store.prefix, "job-42", "run", lease.epoch, 3)  # the workers' records
    keys = [k.decode() for k in await all_keys(store)] + [results.result(0), results.claim(0), results.notify]
    assert len(keys) >= 11  # lock owner epoch index kfmap kfrefs head keyframe + result claim notify
    assert all(k.startswith(f"{store.prefix}:{{job-42}}:") for k in keys)
    assert len({key_slot(k.encode()) for k in keys}) == 1


@pytest.mark.parametrize("bad", ["a{b", "a}b", ""])
async def test_instance_ids_that_break_the_hash_tag_are_refused(make_store: MakeStore, bad: str) -> None:
    store = make_store()
    with pytest.raises(ValueError, match="instance id"):
        await store.reserve(bad, new_token(), owner_info("run"))
    with pytest.raises(ValueError, match="instance id"):
        await store.save_checkpoint(checkpoint(bad))
    assert await store.read_record(f"{bad}@{'0' * 20}") is None
    with pytest.raises(ValueError, match="prefix"):
        KeySpace("pre{fix}")


async def test_the_epoch_outlives_every_lease_and_checkpoint_ttl_applies_to_checkpoint_keys(
    make_store: MakeStore,
) -> None:
    store = make_store(checkpoint_ttl=60, lock_ttl=5)
    lease = await store.reserve("inst", new_token(), owner_info("run"))
    key = checkpoint("inst", executor_states={"a": 1})
    await store.save_checkpoint(key, lease=lease)
    delta = encode_record(
        head_fields(checkpoint("inst")),
        keyframe_id=key.checkpoint_id,
        shared_delta=StateDelta(),
        executor_delta=StateDelta({"a": 2}),
        keyframe_state=None,
    )
    await store.write_record(delta, lease)
    k = store.keys
    checkpoint_keys = [
        k.index("inst"),
        k.kfmap("inst"),
        k.kfrefs("inst"),
        k.head("inst", key.checkpoint_id),
        k.head("inst", delta.checkpoint_id),
        k.keyframe("inst", key.checkpoint_id),
    ]
    for name in checkpoint_keys:
        assert 59_000 < await store.client.pttl(name) <= 60_000, name
    assert 0 < await store.client.pttl(k.lock("inst")) <= 5_000
    assert 0 < await store.client.pttl(k.owner("inst")) <= 5_000
    # the epoch lives as long as the checkpoints (60 s > 10 leases of 5 s), longer than any lock
    assert 59_000 < await store.client.pttl(k.epoch("inst")) <= 60_000
    await store.release(lease)
    assert 59_000 < await store.client.pttl(k.epoch("inst")) <= 60_000

    plain = make_store(prefix=store.prefix + "-plain", lock_ttl=2)  # under the test's prefix: cleaned up
    lease = await plain.reserve("inst", new_token(), owner_info("run"))
    cp = checkpoint("inst")
    await plain.save_checkpoint(cp, lease=lease)
    assert await plain.client.pttl(plain.keys.head("inst", cp.checkpoint_id)) == -1
    assert await plain.client.pttl(plain.keys.index("inst")) == -1
    # no checkpoint TTL: the epoch expires 10 lease TTLs after the last reserve, renewal or write
    assert 19_000 < await plain.client.pttl(plain.keys.epoch("inst")) <= 20_000
    await plain.client.pexpire(plain.keys.epoch("inst"), 5_000)
    assert await plain.renew(lease)
    assert 19_000 < await plain.client.pttl(plain.keys.epoch("inst")) <= 20_000
    await plain.release(lease)


async def test_one_changed_executor_of_1000_writes_o1_bytes(make_store: MakeStore) -> None:
    store = make_store()
    states = {f"executor-{i:04d}": {"count": i, "history": list(range(20))} for i in range(1000)}
    base = checkpoint("inst", executor_states=states)
    await store.save_checkpoint(base)
    keyframe_bytes = await store.client.strlen(store.keys.keyframe("inst", base.checkpoint_id))
    before = set(await all_keys(store))

    delta = encode_record(
        head_fields(checkpoint("inst", superstep=1)),
        keyframe_id=base.checkpoint_id,
        shared_delta=StateDelta(),
        executor_delta=StateDelta({"executor-0500": {"count": -1, "history": []}}),
        keyframe_state=None,
    )
    await store.write_record(delta, None)
    new_keys = set(await all_keys(store)) - before
    assert new_keys == {store.keys.head("inst", delta.checkpoint_id).encode()}
    written = sum([await store.client.strlen(key) for key in new_keys])
    assert keyframe_bytes > 50_000
    assert written < 1_000, f"a one-executor superstep wrote {written} bytes (keyframe {keyframe_bytes})"
    loaded = await store.load_checkpoint(delta.checkpoint_id)
    assert loaded.executor_states == {**states, "executor-0500": {"count": -1, "history": []}}


# -- connections ---------------------------------------------------------------------------------------------


async def test_from_url_tls_password_and_hiredis() -> None:
    store = RedisStore.from_url("rediss://:s3cret@redis.example:6380/2", prefix="deploy-a")
    pool = store.client.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["db"] == 2
    assert store.prefix == "deploy-a"
    assert store.uses_hiredis  # hiredis is installed in the test environment
    await store.aclose()


def test_a_decoding_client_is_refused() -> None:
    import fakeredis

    with pytest.raises(ValueError, match="binary-safe"):
        RedisStore(fakeredis.FakeAsyncRedis(decode_responses=True))
    with pytest.raises(ValueError, match="binary-safe"):
        RedisStore.from_url("redis://127.0.0.1:6379/0", decode_responses=True)


async def test_describe_of_a_held_instance_on_a_real_clock(make_store: MakeStore) -> None:
    store = make_store(lock_ttl=2.0)
    lease = await store.reserve("inst", new_token(), owner_info("run-a"))
    await asyncio.sleep(0.2)
    info = await store.describe("inst")
    assert info.ttl_left is not None
    assert 1.0 < info.ttl_left < 1.9
    assert info.epoch == lease.epoch
    assert await store.renew(lease)
    assert (await store.describe("inst")).ttl_left > 1.9
    await store.release(lease)


async def test_listing_checkpoints_reads_them_in_one_round_trip() -> None:
    """``list_checkpoints`` pipelines its reads: the index query plus one pipeline, not one call per record."""
    import fakeredis

    store = RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), prefix="bftest")
    for step in range(10):
        await store.save_checkpoint(checkpoint("listed", superstep=step))
    round_trips: list[str] = []
    client = store.client
    direct, make_pipeline = client.execute_command, client.pipeline

    async def command(*args: object, **kwargs: object) -> object:
        round_trips.append(str(args[0]))
        return await direct(*args, **kwargs)

    def pipeline(*args: object, **kwargs: object) -> object:
        round_trips.append("pipeline")
        return make_pipeline(*args, **kwargs)

    client.execute_command = command  # type: ignore[method-assign]
    client.pipeline = pipeline  # type: ignore[method-assign]
    listed = await store.list_checkpoints("listed")
    assert [cp.superstep for cp in listed] == list(range(9, -1, -1))
    assert round_trips == ["ZREVRANGE", "pipeline"]  # the index, then all ten reads together
