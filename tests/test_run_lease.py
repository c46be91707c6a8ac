"""A run and its lease, on every store: renewed while the run lives, and a lost lease stops it before it writes.

The store-level rules (TTL, renew, fencing) are in ``test_store_contract.py``; these tests check that the engine's
runner uses them: it renews in the background, and it stops with ``ReservationLostError`` instead of writing.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from barrierflow.engine import (
    Executor,
    LocalDispatcher,
    ReservationLostError,
    RunState,
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
