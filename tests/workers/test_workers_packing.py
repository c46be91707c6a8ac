"""Packing: the task copies of several runs, ready together, travel in one Celery task (``workers/packing.py``).

Each copy of a pack is claimed, fenced, run, written and re-sent on its own: these tests check that a pack
behaves exactly like its copies sent alone, and that it really is one message and two round trips.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from barrierflow.broker.results import ResultKeys, ResultReader
from barrierflow.engine import MemoryStore, RunState
from barrierflow.engine.dispatch import ExecutorBatch, SuperstepWork
from barrierflow.engine.messages import Delivery
from barrierflow.engine.registry import workflow_factory
from barrierflow.engine.store import new_token, owner_info
from barrierflow.workers import CeleryDispatcher, app
from barrierflow.workers.packing import Packer, split_into_packs
from barrierflow.workers.tasks import WorkerProcess
from barrierflow.workers.wire import decode_result, encode_task
from tests import workflows_for_workers as flows

# -- dealing copies into packs ----------------------------------------------------------------------------------


def test_copies_are_dealt_round_robin_into_packs_of_bounded_size() -> None:
    copies = [bytes([i]) for i in range(10)]
    packs = split_into_packs(copies, 4, 64)
    assert packs == [copies[0::4], copies[1::4], copies[2::4], copies[3::4]]  # consecutive copies apart
    assert split_into_packs(copies, 4, 2) == [copies[i::5] for i in range(5)]  # never more than 2 a pack
    assert split_into_packs(copies, 4, 1) == [[copy] for copy in copies]  # pack size 1: no packing
    assert split_into_packs(copies[:2], 4, 64) == [[copies[0]], [copies[1]]]  # never an empty pack
    assert split_into_packs([], 4, 64) == []


async def test_copies_ready_in_one_loop_turn_or_during_a_publish_go_out_together() -> None:
    published: list[list[list[bytes]]] = []
    in_flight, release = threading.Event(), threading.Event()

    def publish(packs: list[list[bytes]]) -> None:
        published.append(packs)
        if len(published) == 2:  # hold the second publish: what comes meanwhile must wait for it
            in_flight.set()
            release.wait(5)

    async def two_packs() -> int:
        return 2

    packer = Packer(publish, two_packs, most=64)
    await packer.send([b"alone"])  # a lone copy goes out at once, as a pack of one
    assert published == [[[b"alone"]]]

    first = [asyncio.ensure_future(packer.send([f"r{i}".encode()])) for i in range(5)]  # one loop turn
    await asyncio.to_thread(in_flight.wait, 5)
    assert published[1] == [[b"r0", b"r2", b"r4"], [b"r1", b"r3"]]  # five runs, two messages
    later = [asyncio.ensure_future(packer.send([f"l{i}".encode(), f"m{i}".encode()])) for i in range(3)]
    await asyncio.sleep(0.05)
    assert len(published) == 2 and not any(f.done() for f in first + later)  # waiting for the publish
    release.set()
    await asyncio.gather(*first, *later)
    assert published[2] == [[b"l0", b"l1", b"l2"], [b"m0", b"m1", b"m2"]]  # one run's copies apart
    assert len(published) == 3


async def test_a_failed_publish_is_raised_to_every_run_of_its_batch() -> None:
    def publish(packs: list[list[bytes]]) -> None:
        raise ConnectionError("broker down")

    async def one_pack() -> int:
        return 1

    packer = Packer(publish, one_pack, most=64)
    sends = [packer.send([b"a"]), packer.send([b"b"])]
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


# -- a pack on the worker ---------------------------------------------------------------------------------------


class CountingRedis(redis.Redis):
    """Counts round trips: single commands and pipeline executions."""

    trips = 0

    def execute_command(self, *args, **options):
        CountingRedis.trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(*args, **kwargs):
            CountingRedis.trips += 1
            return execute(*args, **kwargs)

        pipe.execute = counted
        return pipe


@pytest.fixture
async def leases(redis_store):
    held = [
        await redis_store.reserve(f"{redis_store.prefix}-pack{i}", new_token(), owner_info(f"r{i}"))
        for i in range(3)
    ]
    yield held
    for lease in held:
        await redis_store.release(lease)


def first_superstep(lease, text: str) -> SuperstepWork:
    graph = workflow_factory("bfw_versioned")().build_graph()
    return SuperstepWork(
        instance_id=lease.instance_id,
        run_id=f"run-{lease.instance_id}",
        superstep=1,
        workflow_name="bfw_versioned",
        graph_signature=graph.signature,
        batches=[ExecutorBatch("first", [(0, Delivery("first", text))])],
        shared_state={},
        executor_states={},
        lease_token=lease.token,
        epoch=lease.epoch,
    )


def keys_of(redis_store, work: SuperstepWork) -> ResultKeys:
    return ResultKeys(redis_store.prefix, work.instance_id, work.run_id, work.epoch, work.superstep)


async def test_a_pack_of_three_instances_costs_two_round_trips_and_fences_each_copy_alone(
    redis_store, redis_url, leases
) -> None:
    dispatcher = CeleryDispatcher(store=redis_store)
    works = [first_superstep(lease, f"text {i}") for i, lease in enumerate(leases)]
    payloads = [encode_task(dispatcher._envelopes(work, [work.batches])[0]) for work in works]
    reader = ResultReader(redis_store.client)
    # Instance 1's lease is lost (another run took the instance); instance 2's superstep was collected already.
    await redis_store.release(leases[1])
    await reader.discard(keys_of(redis_store, works[2]), [0], works[2].lease_token, 60)
    worker = WorkerProcess(CountingRedis.from_url(redis_url))
    try:
        await asyncio.to_thread(worker.handle_pack, payloads[:1])  # loads the scripts: not counted below
        await reader.discard(keys_of(redis_store, works[0]), [0], works[0].lease_token, 60)
        works[0].superstep = 2  # a fresh superstep of instance 0
        payloads[0] = encode_task(dispatcher._envelopes(works[0], [works[0].batches])[0])
        CountingRedis.trips = 0
        outcome = await asyncio.to_thread(worker.handle_pack, payloads)  # a worker's own thread and loop
        trips = CountingRedis.trips
    finally:
        worker.close()
    assert outcome == ["written", "skipped: fenced", "skipped: collected"]
    assert trips == 2  # the claims of the pack in one pipeline, results and claim releases in another
    [written] = await reader.fetch(keys_of(redis_store, works[0]), [0])
    result = decode_result(written)
    assert result.refused is None and [o.sent for o in result.outcomes] == [[("text 0", None)]]
    for work in works[1:]:  # the fenced copies left nothing behind: no record, no claim, not "started"
        keys = keys_of(redis_store, work)
        assert await redis_store.client.exists(keys.result(0), keys.claim(0), keys.started(0)) == 0
    assert await redis_store.client.exists(keys_of(redis_store, works[0]).claim(0)) == 0  # released


async def test_an_undecodable_copy_is_skipped_and_the_rest_of_its_pack_runs(redis_store, redis_url, leases):
    dispatcher = CeleryDispatcher(store=redis_store)
    work = first_superstep(leases[0], "fine")
    payload = encode_task(dispatcher._envelopes(work, [work.batches])[0])
    worker = WorkerProcess(redis.Redis.from_url(redis_url))
    try:
        outcome = await asyncio.to_thread(worker.handle_pack, [b"\x93garbage", payload])
        assert outcome == ["skipped: undecodable", "written"]
    finally:
        worker.close()


async def test_a_slow_copy_does_not_hold_back_the_results_of_the_copies_before_it(
    redis_store, redis_url, leases
) -> None:
    """A finished copy's result is written within ``RESULT_FLUSH`` while the rest of its pack still runs."""
    dispatcher = CeleryDispatcher(store=redis_store)
    fast = first_superstep(leases[0], "fast")
    slow = first_superstep(leases[1], "slow")
    payloads = [encode_task(dispatcher._envelopes(work, [work.batches])[0]) for work in (fast, slow)]
    worker = WorkerProcess(redis.Redis.from_url(redis_url))
    original = worker.run

    def run(envelope, *traced):
        if envelope.instance_id == slow.instance_id:
            time.sleep(1.0)
        return original(envelope, *traced)

    worker.run = run
    reader = ResultReader(redis_store.client)
    try:
        handled = asyncio.ensure_future(asyncio.to_thread(worker.handle_pack, payloads))
        finished = await reader.wait(keys_of(redis_store, fast), 0.7)
        assert finished == [0] and not handled.done()  # written while the slow copy still runs
        assert await handled == ["written", "written"]
    finally:
        worker.close()


# -- packs on real workers --------------------------------------------------------------------------------------


def recording(dispatcher: CeleryDispatcher, delay: float = 0.0) -> list[int]:
    """Record the size of every message the dispatcher publishes (``delay``: a slow broker, each publish)."""
    sizes: list[int] = []
    publish = dispatcher._publish

    def spy(packs: list[list[bytes]]) -> None:
        sizes.extend(len(pack) for pack in packs)
        time.sleep(delay)  # copies ready meanwhile go out together in the next publish
        publish(packs)

    dispatcher._publish = spy
    return sizes


async def test_concurrent_runs_share_messages_and_give_the_outputs_of_in_process_runs(
    celery_workers, redis_store
) -> None:
    texts = [f"hello {i} big world" for i in range(12)]
    expected = [(await flows.bfw_fan().build(store=MemoryStore()).run(text)).outputs for text in texts]
    dispatcher = CeleryDispatcher(store=redis_store, slots=1, tasks_per_slot=1)
    sizes = recording(dispatcher)
    try:
        runs = [
            flows.bfw_fan()
            .build(instance_id=f"{redis_store.prefix}-many{i}", store=redis_store, dispatcher=dispatcher)
            .run(text)
            for i, text in enumerate(texts)
        ]
        results = await asyncio.wait_for(asyncio.gather(*runs), 60)
    finally:
        await dispatcher.aclose()
    assert [r.status for r in results] == [RunState.IDLE] * len(texts)
    assert [r.outputs for r in results] == expected
    assert sum(sizes) >= 3 * len(texts)  # every superstep's task was sent ...
    assert len(sizes) < 3 * len(texts) and max(sizes) > 1  # ... in fewer messages: packed


@pytest.mark.slow
async def test_a_pack_whose_worker_dies_is_sent_again_copy_by_copy_and_every_run_commits_once(
    celery_workers, redis_store
) -> None:
    jobs = [{"width": 3, "delay": 0.15} for _ in range(3)]
    ids = [f"{redis_store.prefix}-packdies{i}" for i in range(3)]
    victim_queue = victim = f"{celery_workers.queue}-packvictim"
    celery_workers.start(victim, queue=victim_queue)
    celery_workers.wait_ready([victim])
    # one slot, one message per publish: the runs' copies ready together travel in one pack to the victim
    dispatcher = CeleryDispatcher(
        store=redis_store, queue=victim_queue, slots=1, tasks_per_slot=1, redispatch_after=1.0, claim_ttl=0.6
    )
    sizes = recording(dispatcher, delay=0.2)
    survivors = [celery_workers.node(name) for name in celery_workers.procs if name != victim]
    runs = [
        asyncio.ensure_future(
            flows.bfw_effects().build(instance_id=i, store=redis_store, dispatcher=dispatcher).run(job)
        )
        for i, job in zip(ids, jobs, strict=True)
    ]
    started = [flows.side_key(i, "started") for i in ids]
    try:
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(flows.side().exists, *started):
            assert time.monotonic() < deadline, "no tally handler started"
            await asyncio.sleep(0.02)
        celery_workers.kill(victim)  # mid-pack: one copy partly run, the others claimed and waiting
        app.control.add_consumer(victim_queue, destination=survivors, reply=False)
        results = await asyncio.wait_for(asyncio.gather(*runs), 40)
    finally:
        app.control.cancel_consumer(victim_queue, destination=survivors, reply=False)
        for run in runs:
            run.cancel()
        await dispatcher.aclose()

    assert max(sizes) >= 2  # copies of several runs did travel together
    for instance_id, result in zip(ids, results, strict=True):
        assert result.status is RunState.IDLE
        assert len(result.outputs) == len(set(result.outputs)) == 3 * len(flows.TALLIES)  # each output once
        latest = await redis_store.latest_checkpoint(instance_id)
        assert latest.executor_states == {name: {"count": 3, "sum": 3} for name in flows.TALLIES}
        assert [cp.superstep for cp in await redis_store.list_checkpoints(instance_id)] == [2, 1, 0]
    # the dead pack's copies were sent again: handlers of the killed worker's pack ran more than once
    invocations = [
        sum(int(v) for v in flows.side().hgetall(flows.side_key(i, "invocations")).values()) for i in ids
    ]
    assert sum(invocations) > 3 * 3 * len(flows.TALLIES)
