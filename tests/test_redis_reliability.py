"""The Redis store under real load and faults: clients released, dead sockets, 1,000 runs, bounded keys."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis

from barrierflow.broker import RedisStore
from barrierflow.broker.keys import EPOCH_LEASES
from barrierflow.broker.results import ResultKeys, ResultReader
from barrierflow.engine import WorkflowBuilder, WorkflowContext, executor
from barrierflow.engine.checkpoint import Checkpoint
from barrierflow.engine.errors import StoreError, WorkflowRunInProgressError
from barrierflow.engine.store import new_token, owner_info


@executor(id="double")
async def double(n: int, ctx: WorkflowContext) -> None:
    ctx.set_executor_state(ctx.get_executor_state(0) + 1)
    await ctx.send_message(n * 2)


@executor(id="emit")
async def emit(n: int, ctx: WorkflowContext) -> None:
    await ctx.yield_output(n)


def two_steps() -> WorkflowBuilder:
    return WorkflowBuilder(name="two_steps", start_executor=double).add_edge(double, emit)


@executor(id="nap")
async def nap(seconds: float, ctx: WorkflowContext) -> None:
    await asyncio.sleep(seconds)
    await ctx.yield_output("rested")


def own_clients(url: str, name: str) -> int:
    admin = redis.Redis.from_url(url)
    try:
        return sum(1 for client in admin.client_list() if client.get("name") == name)
    finally:
        admin.close()


# -- lifecycle -------------------------------------------------------------------------------------------------


def test_100_asyncio_runs_over_one_store_leave_no_connection_behind(redis_url: str, real_redis_prefix: str):
    name = f"bftest-leak-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, client_name=name)
    before = own_clients(redis_url, name)

    async def one_run(i: int) -> None:
        result = await two_steps().build(instance_id=f"leak-{i}", store=store).run(i)
        assert result.outputs == [2 * i]

    for i in range(100):
        asyncio.run(one_run(i))  # no aclose: the loop's shutdown closes its client
    gc.collect()
    assert own_clients(redis_url, name) == before == 0
    assert len(store._bound) == 0

    async def closed_explicitly() -> None:
        async with store:
            await store.client.ping()
            assert own_clients(redis_url, name) == 1
        assert own_clients(redis_url, name) == 0

    asyncio.run(closed_explicitly())


def test_a_dispatcher_owning_its_client_leaves_none_behind_either(redis_url: str) -> None:
    from barrierflow.workers import CeleryDispatcher

    name = f"bftest-leak-{uuid.uuid4().hex[:8]}"
    dispatcher = CeleryDispatcher(redis_url=f"{redis_url}?client_name={name}")

    async def use() -> None:
        assert await dispatcher._redis().ping()

    for _ in range(20):
        asyncio.run(use())
    assert own_clients(redis_url, name) == 0


# -- dead connections ------------------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy to Redis that can go silent (a half-open connection: nothing passes, nothing closes)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.silent = False
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.silent:
                    writer.write(data)
                    await writer.drain()

    async def __aexit__(self, *exc_info: object) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()


def upstream_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


async def test_a_renewal_on_a_half_open_connection_fails_within_a_third_of_the_ttl(
    redis_url: str, real_redis_prefix: str
) -> None:
    """Default client settings (30 s socket timeout, 3 retries): unbounded, one renewal could take 2 minutes."""
    async with Proxy(upstream_of(redis_url)) as proxy:
        store = RedisStore.from_url(proxy.url, prefix=real_redis_prefix, lock_ttl=3)
        lease = await store.reserve("half-open", new_token(), owner_info("run"))
        proxy.silent = True
        started = time.monotonic()
        with pytest.raises(StoreError, match="renew of instance 'half-open' got no answer within 1 s"):
            await store.renew(lease)
        assert time.monotonic() - started < 3  # before the lease ends: the renewer can still mark it lost
        proxy.silent = False
        await store.aclose()
    direct = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=3)
    assert await direct.release(lease)
    await direct.aclose()


async def test_a_socket_cut_mid_wait_errors_in_bounded_time(redis_url: str, real_redis_prefix: str) -> None:
    async with Proxy(upstream_of(redis_url)) as proxy:
        store = RedisStore.from_url(proxy.url, prefix=real_redis_prefix, socket_timeout=1.0, retries=1)
        keys = ResultKeys(real_redis_prefix, "cut", "run", 1, 1)
        reader = ResultReader(store.client, store.blocking_client)  # as CeleryDispatcher(store=store) does
        waiting = asyncio.ensure_future(reader.wait(keys, 30))
        await asyncio.sleep(0.2)
        proxy.silent = True  # the server's answer never arrives, the socket never closes
        started = time.monotonic()
        with pytest.raises(redis.RedisError):
            await asyncio.wait_for(waiting, 20)
        assert (
            time.monotonic() - started < 10
        )  # (retries + 1) x (socket timeout + backoff), not 30 s or forever
        await store.aclose()


async def test_a_connection_killed_mid_wait_recovers(redis_url: str, real_redis_prefix: str) -> None:
    name = f"bftest-kill-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, client_name=name)
    keys = ResultKeys(real_redis_prefix, "killed", "run", 1, 1)
    reader = ResultReader(store.client)
    waiting = asyncio.ensure_future(reader.wait(keys, 30))
    admin = redis.Redis.from_url(redis_url)
    try:
        for _ in range(100):  # the BRPOP's connection, once it blocks
            blocked = [c for c in admin.client_list() if c.get("name") == name and c.get("cmd") == "brpop"]
            if blocked:
                break
            await asyncio.sleep(0.02)
        admin.client_kill_filter(_id=blocked[0]["id"])
        await asyncio.sleep(0.3)  # the retry reconnects and blocks again
        admin.lpush(keys.notify, 7)
        assert await asyncio.wait_for(waiting, 10) == [7]
    finally:
        admin.delete(keys.notify)
        admin.close()
        await store.aclose()


async def test_blocking_waits_never_hold_the_connections_renewals_need(
    redis_url: str, real_redis_prefix: str
) -> None:
    async with RedisStore.from_url(
        redis_url, prefix=real_redis_prefix, max_connections=2, lock_ttl=3
    ) as store:
        lease = await store.reserve("starved", new_token(), owner_info("run"))
        reader = ResultReader(store.client, store.blocking_client)  # as CeleryDispatcher(store=store) does
        steps = [ResultKeys(real_redis_prefix, "starved", "run", lease.epoch, step) for step in range(5)]
        waits = [asyncio.ensure_future(reader.wait(keys, 2.0)) for keys in steps]  # 5 waits, 2 connections
        await asyncio.sleep(0.3)
        assert await store.renew(lease)  # within its bound of 1 s: no wait holds a command connection
        assert await asyncio.gather(*waits) == [[]] * 5
        await store.release(lease)


# -- many runs -------------------------------------------------------------------------------------------------


async def test_1000_concurrent_runs_over_one_store_all_complete(
    redis_url: str, real_redis_prefix: str
) -> None:
    """Before: redis-py's pool refused the 101st connection (MaxConnectionsError): 100 of 200 correct."""
    async with RedisStore.from_url(redis_url, prefix=real_redis_prefix) as store:
        runs = [two_steps().build(instance_id=f"many-{i}", store=store).run(i) for i in range(1000)]
        results = await asyncio.gather(*runs, return_exceptions=True)
    correct = sum(
        1 for i, r in enumerate(results) if not isinstance(r, BaseException) and r.outputs == [2 * i]
    )
    assert correct == 1000, [r for r in results if isinstance(r, BaseException)][:3]


async def test_an_8_s_handler_in_process_over_redis_outlives_several_leases(
    redis_url: str, real_redis_prefix: str
) -> None:
    async with RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=2) as store:
        wf = WorkflowBuilder(name="nap", start_executor=nap).build(instance_id="napper", store=store)
        result = await wf.run(8.0)
    assert result.outputs == ["rested"]


# -- keys ------------------------------------------------------------------------------------------------------


async def instance_keys(store: RedisStore, instance_id: str) -> list[bytes]:
    return [k async for k in store.client.scan_iter(match=store.keys.pattern(instance_id), count=1000)]


async def test_1000_runs_of_one_instance_keep_the_documented_keys(
    redis_url: str, real_redis_prefix: str
) -> None:
    """docs/keys.md: epoch + index + kfmap + kfrefs + ``retention`` heads + the keyframes they name."""
    async with RedisStore.from_url(redis_url, prefix=real_redis_prefix, retention=5) as store:
        wf = two_steps().build(instance_id="busy", store=store)
        for i in range(1000):
            assert (await wf.run(i)).outputs == [2 * i]
        keyframes = await store.client.hlen(store.keys.kfrefs("busy"))
        keys = await instance_keys(store, "busy")
    assert 1 <= keyframes <= 5
    assert len(keys) == 4 + 5 + keyframes
    assert not [k for k in keys if b":bfw:" in k or k.endswith((b":lock", b":owner"))]


async def test_1000_one_run_instances_with_checkpoint_ttl_leave_only_expiring_keys(
    redis_url: str, real_redis_prefix: str
) -> None:
    async with RedisStore.from_url(
        redis_url, prefix=real_redis_prefix, checkpoint_ttl=60, lock_ttl=2
    ) as store:
        for start in range(0, 1000, 100):
            runs = [
                two_steps().build(instance_id=f"once-{i}", store=store).run(i)
                for i in range(start, start + 100)
            ]
            await asyncio.gather(*runs)
        client = store.client
        keys = [k async for k in client.scan_iter(match=f"{real_redis_prefix}:*", count=1000)]
        per_instance: dict[bytes, int] = {}
        for key in keys:
            instance = key.split(b"{", 1)[1].split(b"}", 1)[0]
            per_instance[instance] = per_instance.get(instance, 0) + 1
        ttls = await asyncio.gather(*(client.pttl(k) for k in keys))
    assert len(per_instance) == 1000
    # one run of two supersteps + the input barrier: 3 heads on 1 keyframe, + epoch, index, kfmap, kfrefs
    assert set(per_instance.values()) == {8}
    longest = max(60, EPOCH_LEASES * 2) * 1000
    assert all(0 < ttl <= longest for ttl in ttls)  # every key expires: nothing outlives checkpoint_ttl


async def test_foreign_checkpoint_ids_are_pruned_with_their_checkpoint(make_store) -> None:
    store = make_store(retention=2)
    if not isinstance(store, RedisStore):
        pytest.skip("pointer keys are the Redis store's")
    mine = Checkpoint("my-own-id", "inst", "wf", "sig", superstep=1)
    await store.save_checkpoint(mine)
    pointer = store.keys.foreign("my-own-id")
    assert await store.client.get(pointer) == b"inst"
    assert (await store.load_checkpoint("my-own-id")).superstep == 1
    for step in (2, 3):  # retention 2: the foreign head is dropped, and its pointer with it, in the same call
        await store.save_checkpoint(Checkpoint(f"inst@{step:020d}", "inst", "wf", "sig", superstep=step))
    assert await store.client.exists(pointer) == 0
    await store.save_checkpoint(mine)
    assert await store.delete_checkpoint("my-own-id")
    assert await store.client.exists(pointer) == 0


async def test_delete_instance_removes_everything_and_refuses_while_held(make_store) -> None:
    store = make_store()
    if not isinstance(store, RedisStore):
        pytest.skip("delete_instance is the Redis store's")
    lease = await store.reserve("doomed", new_token(), owner_info("run"))
    await store.save_checkpoint(Checkpoint("doomed@" + "1" * 20, "doomed", "wf", "sig"), lease=lease)
    await store.save_checkpoint(Checkpoint("doomed-own-id", "doomed", "wf", "sig", superstep=1), lease=lease)
    await store.client.set(
        ResultKeys(store.prefix, "doomed", "run", lease.epoch, 1).claim(0), b"w", px=60_000
    )
    await store.save_checkpoint(Checkpoint("kept@" + "2" * 20, "kept", "wf", "sig"))
    assert len(await instance_keys(store, "doomed")) >= 8

    with pytest.raises(WorkflowRunInProgressError, match="run 'run'"):
        await store.delete_instance("doomed")
    assert len(await instance_keys(store, "doomed")) >= 8  # nothing deleted

    await store.release(lease)
    had = len(await instance_keys(store, "doomed")) + 1  # + the foreign id's pointer
    assert await store.delete_instance("doomed") == had
    assert await instance_keys(store, "doomed") == []
    assert await store.client.exists(store.keys.foreign("doomed-own-id")) == 0
    assert await store.latest_checkpoint("kept") is not None  # other instances untouched
    assert await store.delete_instance("doomed") == 0  # nothing left, and the deletion leaves nothing
    assert await instance_keys(store, "doomed") == []


async def test_a_renewal_keeps_the_holder_known(make_store) -> None:
    """``status`` and the busy error name the holder for as long as the lease is renewed."""
    store = make_store(lock_ttl=0.6)
    lease = await store.reserve("held", new_token(), owner_info("run-7"))
    for _ in range(4):  # 1.2 s: twice the TTL the owner key was first given
        await asyncio.sleep(0.3)
        assert await store.renew(lease)
    info = await store.describe("held")
    assert info.held and info.owner.get("run_id") == "run-7"
    with pytest.raises(WorkflowRunInProgressError, match="run 'run-7'"):
        await store.reserve("held", new_token(), owner_info("other"))
    await store.release(lease)
