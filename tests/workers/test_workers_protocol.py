"""The pieces of the Celery barrier on their own: task planning, fenced first-write-wins results, slots."""

from __future__ import annotations

import asyncio

import pytest
import redis

from barrierflow.broker.results import ClaimStatus, PutStatus, ResultKeys, ResultReader, ResultWriter
from barrierflow.engine.dispatch import ExecutorBatch
from barrierflow.engine.messages import Delivery
from barrierflow.engine.store import new_token, owner_info
from barrierflow.workers import CeleryDispatcher
from barrierflow.workers.dispatcher import plan_tasks


def batches(sizes: list[int]) -> list[ExecutorBatch]:
    """Executor batches with deliveries numbered in superstep order, round-robin like a real fan-out."""
    out = [ExecutorBatch(f"e{i}", []) for i in range(len(sizes))]
    index = 0
    for round_ in range(max(sizes)):
        for batch, size in zip(out, sizes, strict=True):
            if round_ < size:
                batch.deliveries.append((index, Delivery(batch.executor_id, index)))
                index += 1
    return out


def test_plan_keeps_each_executor_whole_balances_and_keeps_order() -> None:
    given = batches([7, 1, 1, 5, 3, 3, 2])
    tasks = plan_tasks(given, 3)
    assert len(tasks) == 3
    placed = [b.executor_id for task in tasks for b in task]
    assert sorted(placed) == sorted(b.executor_id for b in given)  # every batch once, never split
    loads = sorted(sum(len(b.deliveries) for b in task) for task in tasks)
    assert loads == [7, 7, 8]
    for task in tasks:
        firsts = [b.deliveries[0][0] for b in task]
        assert firsts == sorted(firsts)
    assert plan_tasks(given, 50) == [[b] for b in given]
    assert plan_tasks(given, 0) == [given]


async def test_dispatcher_plans_about_k_tasks_never_one_per_message() -> None:
    dispatcher = CeleryDispatcher(slots=2, redis_url="redis://unused")
    assert len(await dispatcher.plan(batches([1] * 100))) == 4  # 2 slots x 2 tasks per slot
    assert len(await dispatcher.plan(batches([1] * 5))) == 1  # fewer than min_task_deliveries each
    assert len(await dispatcher.plan(batches([100]))) == 1  # one executor: one task, in order
    sized = CeleryDispatcher(slots=2, batch_size=25, redis_url="redis://unused")
    assert len(await sized.plan(batches([1] * 100))) == 4
    wide = CeleryDispatcher(slots=64, redis_url="redis://unused")
    assert len(await wide.plan(batches([1] * 100))) == 13  # at least 8 deliveries a task


async def test_slots_are_the_pool_sizes_of_the_workers_on_the_queue(celery_workers) -> None:
    """From the worker registry (``tests/workers/test_worker_presence.py`` checks it in detail)."""
    assert await CeleryDispatcher(queue=celery_workers.queue).worker_slots() == 2


@pytest.fixture
async def lease(redis_store):
    instance_id = f"{redis_store.prefix}-results"
    held = await redis_store.reserve(instance_id, new_token(), owner_info("r1"))
    yield held
    await redis_store.release(held)


def claim(writer: ResultWriter, keys: ResultKeys, lease, task: int, send: int = 1, ttl: float = 30.0):
    return writer.claim(keys, task, lease.token, lease.epoch, send=send, ttl=ttl, started_ttl=60)


@pytest.fixture
def sides(redis_url: str, redis_store) -> tuple[ResultWriter, ResultReader]:
    """A worker's writer (sync client) and the coordinator's reader (the store's client)."""
    return ResultWriter(redis.Redis.from_url(redis_url)), ResultReader(redis_store.client)


async def test_results_are_fenced_first_write_wins_and_wake_the_coordinator_once(
    sides, redis_store, lease
) -> None:
    writer, reader = sides
    keys = ResultKeys(redis_store.prefix, lease.instance_id, "r1", lease.epoch, 3)

    running = claim(writer, keys, lease, 0)
    assert writer.put(keys, 0, lease.token, lease.epoch, b"first", 60) is PutStatus.WRITTEN
    assert 0 < await redis_store.client.pttl(keys.notify) <= 60_000  # the notify list always expires
    running.release()
    assert claim(writer, keys, lease, 0) is ClaimStatus.DONE  # a duplicate copy skips its handlers
    assert writer.put(keys, 0, lease.token, lease.epoch, b"second", 60) is PutStatus.DUPLICATE
    assert writer.put(keys, 1, "not-the-token", lease.epoch, b"x", 60) is PutStatus.FENCED
    assert writer.put(keys, 1, lease.token, lease.epoch + 1, b"x", 60) is PutStatus.FENCED

    assert await reader.wait(keys, 1.0) == [0]  # one wake-up for task 0, none for the refused writes
    assert await reader.wait(keys, 0.05) == []
    assert await reader.fetch(keys, [0, 1]) == [b"first", None]
    assert 0 < await redis_store.client.pttl(keys.result(0)) <= 60_000
    assert await reader.lease_holds(keys, lease.token, lease.epoch)

    await reader.discard(keys, [0, 1], lease.token, 60)
    assert await redis_store.client.exists(keys.result(0), keys.notify) == 0

    await redis_store.release(lease)  # the run ends: a late task writes nothing
    assert claim(writer, keys, lease, 2) is ClaimStatus.FENCED
    assert writer.put(keys, 2, lease.token, lease.epoch, b"late", 60) is PutStatus.FENCED
    assert not await reader.lease_holds(keys, lease.token, lease.epoch)


async def test_a_late_copy_after_discard_recreates_no_key(sides, redis_store, lease) -> None:
    """The run goes on under the same lease; a copy of a collected superstep must leave nothing behind."""
    writer, reader = sides
    keys = ResultKeys(redis_store.prefix, lease.instance_id, "r1", lease.epoch, 3)
    assert writer.put(keys, 0, lease.token, lease.epoch, b"done", 60) is PutStatus.WRITTEN
    await reader.discard(keys, [0, 1], lease.token, 60)
    before = sorted(await redis_store.client.keys(f"{redis_store.prefix}:*"))

    assert claim(writer, keys, lease, 1) is ClaimStatus.COLLECTED  # a copy picked up late: does not run
    assert writer.put(keys, 1, lease.token, lease.epoch, b"late", 60) is PutStatus.COLLECTED  # or ran already
    assert writer.put(keys, 0, lease.token, lease.epoch, b"late", 60) is PutStatus.COLLECTED
    assert sorted(await redis_store.client.keys(f"{redis_store.prefix}:*")) == before
    # the next superstep of the same run is not fenced by the marker
    later = ResultKeys(redis_store.prefix, lease.instance_id, "r1", lease.epoch, 4)
    assert writer.put(later, 0, lease.token, lease.epoch, b"next", 60) is PutStatus.WRITTEN


async def test_one_copy_runs_at_a_time_and_never_touches_another_copys_claim(
    sides, redis_store, lease
) -> None:
    writer, reader = sides
    keys = ResultKeys(redis_store.prefix, lease.instance_id, "r1", lease.epoch, 5)
    first = claim(writer, keys, lease, 0, send=1, ttl=0.3)
    assert not isinstance(first, ClaimStatus)
    holder = await redis_store.client.get(keys.claim(0))
    assert claim(writer, keys, lease, 0, send=2) is ClaimStatus.BUSY  # a duplicate: does not run ...
    assert await redis_store.client.get(keys.claim(0)) == holder  # ... nor overwrite the claim
    holds, [seen] = await reader.progress(keys, [0], lease.token, lease.epoch)
    assert holds and seen.running and seen.started == 2  # the duplicate left the queue: counted as taken

    first._stop.set()  # the first copy's worker stalls: its claim lapses, another copy takes over
    first._thread.join()
    await asyncio.sleep(0.5)
    second = claim(writer, keys, lease, 0, send=2)
    assert not isinstance(second, ClaimStatus)
    taken = await redis_store.client.get(keys.claim(0))
    first.release()  # the stalled copy wakes up and releases: compare-and-delete leaves the new claim
    assert await redis_store.client.get(keys.claim(0)) == taken
    second.release()
    assert await redis_store.client.get(keys.claim(0)) is None


def test_the_send_number_travels_in_the_envelope_and_another_layout_is_told_apart() -> None:
    from barrierflow.engine import codec
    from barrierflow.workers.wire import LAYOUT, TaskEnvelope, decode_envelope, encode_task

    sent = TaskEnvelope(
        "wf", "sig", "inst", "run", 3, "tok", 5, 1, "p", 60.0, 10.0, b"body", b"shared", send=4
    )
    back = decode_envelope(encode_task(sent))
    assert (back.layout, back.send, back.body, back.shared) == (LAYOUT, 4, b"body", b"shared")
    # a coordinator of another version: the leading fields still say where to write the refusal
    other = decode_envelope(
        codec.encode(["0:other", "wf", "sig", "inst", "run", 3, "tok", 5, 1, "p", 60.0, 10.0, b"x"])
    )
    assert other.layout == "0:other" and (other.instance_id, other.superstep, other.task) == ("inst", 5, 1)
