"""A run and its lease, on every store: renewed while the run lives, and a lost lease stops it before it writes.

The store-level rules (TTL, renew, fencing) are in ``test_store_contract.py``; these tests check that the engine's
runner uses them: it renews in the background, and it stops with ``ReservationLostError`` instead of writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from barrierflow.engine import (
    Executor,
    LocalDispatcher,
    ReservationLostError,
    RunState,
    StoreError,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowRunInProgressError,
    handler,
)
from barrierflow.engine.memory_store import MemoryStore
from barrierflow.engine.store import Store, new_token, owner_info

from .conftest import MakeStore

TTL = 0.3


class Sleeper(Executor):
    """Sleeps for the given seconds (several lease TTLs) and passes the number on."""

    @handler
    async def on(self, seconds: float, ctx: WorkflowContext[float]) -> None:
        await asyncio.sleep(seconds)
        await ctx.send_message(seconds)


class Sink(Executor):
    @handler
    async def on(self, seconds: float, ctx: WorkflowContext) -> None:
        await ctx.yield_output(seconds)


class LockThief(Executor):
    """Deletes the instance's lock behind the run's back, then lets another party reserve it."""

    def __init__(self, store: Store) -> None:
        super().__init__("thief")
        self.store = store

    @handler
    async def on(self, seconds: float, ctx: WorkflowContext[float]) -> None:
        await drop_lock(self.store, ctx.instance_id)
        await self.store.reserve(ctx.instance_id, new_token(), owner_info("intruder"))
        await ctx.send_message(seconds)


async def drop_lock(store: Store, instance_id: str) -> None:
    """White-box: delete the lock as an operator (or an eviction) would."""
    if isinstance(store, MemoryStore):
        store._holds.pop(instance_id, None)
    else:
        await store.client.delete(store.keys.lock(instance_id))


def sleepy_workflow(store: Store, instance_id: str):
    sleeper, sink = Sleeper("sleeper"), Sink("sink")
    builder = WorkflowBuilder(name="sleepy", start_executor=sleeper).add_edge(sleeper, sink)
    return builder.build(instance_id=instance_id, store=store)


async def test_a_run_longer_than_several_ttls_keeps_its_lease(make_store: MakeStore) -> None:
    store = make_store(lock_ttl=TTL)
    wf = sleepy_workflow(store, "long-run")
    result = await wf.run(TTL * 4)  # one handler outlives four TTLs: only renewal keeps the lease
    assert result.outputs == [TTL * 4]
    assert result.status == RunState.IDLE
    assert not (await store.describe("long-run")).held  # released at the end
    checkpoints = await store.list_checkpoints("long-run")
    assert [cp.superstep for cp in checkpoints] == [2, 1, 0]


async def test_a_lock_deleted_behind_a_runs_back_stops_it_before_its_next_write(
    make_store: MakeStore,
) -> None:
    store = make_store(lock_ttl=TTL)
    thief, sink = LockThief(store), Sink("sink")
    wf = (
        WorkflowBuilder(name="stolen", start_executor=thief)
        .add_edge(thief, sink)
        .build(instance_id="stolen", store=store)
    )
    with pytest.raises(ReservationLostError):
        await wf.run(1.0)
    assert wf.status == RunState.FAILED
    checkpoints = await store.list_checkpoints("stolen")
    assert [cp.superstep for cp in checkpoints] == [0]  # superstep 1 was never written
    assert [d.message for d in checkpoints[0].messages] == [1.0]  # its input is still queued
    info = await store.describe("stolen")
    assert info.held and info.owner["run_id"] == "intruder"  # the run's cleanup left the new holder alone


class _ReleaseFails(MemoryStore):
    """A store whose release cannot reach its backend (a Redis blip at the very end of a run)."""

    async def release(self, lease):  # type: ignore[no-untyped-def]
        from barrierflow.engine.errors import StoreError

        raise StoreError("release of the lease: connection refused")


async def test_a_failed_release_never_masks_the_outcome_and_the_lease_ends_by_its_ttl() -> None:
    store = _ReleaseFails(lock_ttl=TTL)
    wf = sleepy_workflow(store, "release-fails")
    result = await wf.run(0.0)  # the run's own result, not the release's StoreError
    assert result.outputs == [0.0]
    assert wf.lifecycle.value == "idle"  # the handle itself is free
    with pytest.raises(WorkflowRunInProgressError):
        wf.run(0.0)  # but the store still holds the unreleased lease...
    await asyncio.sleep(TTL * 1.5)
    assert (await wf.run(0.0)).outputs == [0.0]  # ...until its TTL ends it


# -- sync handlers never cost the lease (they run on handler threads, off the event loop) ---------------------


class SyncSleeper(Executor):
    """A sync handler that blocks its thread (CPU-bound code or a blocking client would do the same)."""

    @handler
    def on(self, seconds: float, ctx: WorkflowContext[float]) -> None:
        time.sleep(seconds)
        ctx.send_message(seconds)


class SyncLeaf(Executor):
    @handler
    def on(self, seconds: float, ctx: WorkflowContext) -> None:
        time.sleep(seconds)
        ctx.set_executor_state(threading.get_ident())
        ctx.yield_output(ctx.executor_id)


@pytest.fixture
async def short_lease_redis_store(redis_url: str, real_redis_prefix: str):
    from barrierflow.broker import RedisStore

    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=1.0)
    yield store
    await store.aclose()


async def test_a_sync_handler_three_times_longer_than_the_lease_completes(short_lease_redis_store) -> None:
    store = short_lease_redis_store
    sleeper, sink = SyncSleeper("sleeper"), Sink("sink")
    wf = (
        WorkflowBuilder(name="sync-sleepy", start_executor=sleeper)
        .add_edge(sleeper, sink)
        .build(instance_id="sync-3s", store=store)
    )
    result = await wf.run(3.0)
    assert result.outputs == [3.0]
    assert [cp.superstep for cp in await store.list_checkpoints("sync-3s")] == [2, 1, 0]


async def test_twenty_sync_leaves_longer_than_the_lease_together_complete(short_lease_redis_store) -> None:
    """20 x 0.1 s of sync handlers on two threads: 1 s or more of handler time against a 1 s lease."""
    store = short_lease_redis_store
    start = Splitter("start")
    leaves = [SyncLeaf(f"leaf{i:02}") for i in range(20)]
    wf = (
        WorkflowBuilder(name="sync-leaves", start_executor=start)
        .add_fan_out_edges(start, leaves)
        .build(instance_id="sync-leaves", store=store, dispatcher=LocalDispatcher(sync_threads=2))
    )
    loop_thread = threading.get_ident()
    result = await wf.run(0.1)
    assert sorted(result.outputs) == [leaf.id for leaf in leaves]
    threads = set((await store.latest_checkpoint("sync-leaves")).executor_states.values())
    assert loop_thread not in threads and len(threads) <= 2  # off the loop, on the bounded pool


class Splitter(Executor):
    @handler
    async def on(self, seconds: float, ctx: WorkflowContext[float]) -> None:
        await ctx.send_message(seconds)


# -- a lease known lost stops the run at once; a store that is down is reported as such ----------------------

CANCELLED: list[str] = []


class LongWait(Executor):
    """Waits ``seconds`` (many TTLs) after calling ``on_start``; records whether it was cancelled."""

    def __init__(self, on_start) -> None:  # type: ignore[no-untyped-def]
        super().__init__("long")
        self.on_start = on_start

    @handler
    async def on(self, seconds: float, ctx: WorkflowContext) -> None:
        await self.on_start(ctx.instance_id)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            CANCELLED.append(ctx.instance_id)
            raise
        await ctx.yield_output(seconds)


class GoesDown(MemoryStore):
    """A store whose backend becomes unreachable on demand (every call then fails with ``StoreError``)."""

    down = False

    def _check(self, operation: str) -> None:
        if self.down:
            raise StoreError(f"redis store: {operation} failed: ConnectionError: connection refused")

    async def renew(self, lease):  # type: ignore[no-untyped-def]
        self._check("renew")
        return await super().renew(lease)

    async def release(self, lease):  # type: ignore[no-untyped-def]
        self._check("release")
        return await super().release(lease)

    async def write_record(self, record, lease):  # type: ignore[no-untyped-def]
        self._check("write")
        return await super().write_record(record, lease)


def long_wait_flow(store: Store, instance_id: str, on_start):  # type: ignore[no-untyped-def]
    return WorkflowBuilder(name="long-wait", start_executor=LongWait(on_start)).build(
        instance_id=instance_id, store=store
    )


async def test_renewals_failing_for_a_ttl_because_the_store_is_down_raise_store_error_and_cancel_handlers() -> (
    None
):
    from barrierflow.cli.errors import EXIT_UNREACHABLE, classify

    CANCELLED.clear()
    store = GoesDown(lock_ttl=TTL)

    async def outage(instance_id: str) -> None:
        store.down = True

    wf = long_wait_flow(store, "outage", outage)
    with pytest.raises(StoreError, match="could not be reached") as caught:
        await wf.run(60.0)  # without the cancellation this would take a minute
    assert CANCELLED == ["outage"]  # the handler was cancelled as soon as the lease was known lost
    assert classify(caught.value)[0] == EXIT_UNREACHABLE  # the CLI says "Redis unreachable", not "busy"
    assert wf.status == RunState.FAILED
    store.down = False
    assert [cp.superstep for cp in await store.list_checkpoints("outage")] == [0]


async def test_a_lease_taken_over_during_a_handler_cancels_it_with_reservation_lost(
    make_store: MakeStore,
) -> None:
    CANCELLED.clear()
    store = make_store(lock_ttl=TTL)

    async def taken_over(instance_id: str) -> None:
        await drop_lock(store, instance_id)
        await store.reserve(instance_id, new_token(), owner_info("intruder"))

    wf = long_wait_flow(store, "taken-over", taken_over)
    with pytest.raises(ReservationLostError, match="taken-over"):
        await wf.run(60.0)
    assert CANCELLED == ["taken-over"]
    assert (await store.describe("taken-over")).owner["run_id"] == "intruder"


@pytest.mark.parametrize("failure", ["killed", "frozen"])
async def test_a_redis_server_that_goes_away_mid_run_is_reported_as_unreachable(
    tmp_path, failure: str
) -> None:
    """A real redis-server of this test's own, killed (connections refused) or frozen with SIGSTOP (requests
    hang: a half-open connection) while a handler runs."""
    from barrierflow.broker import RedisStore

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; CI needs it")
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    CANCELLED.clear()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", lock_ttl=1.0)
    try:
        for _ in range(200):
            try:
                await store.client.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)

        async def break_it(instance_id: str) -> None:
            server.send_signal(signal.SIGKILL if failure == "killed" else signal.SIGSTOP)

        wf = long_wait_flow(store, f"gone-{failure}", break_it)
        with pytest.raises(StoreError, match="could not be reached"):
            await wf.run(60.0)
        assert [f"gone-{failure}"] == CANCELLED
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.aclose(), 5)
