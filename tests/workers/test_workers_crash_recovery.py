"""Crashes: a worker SIGKILLed mid-superstep, and a coordinator SIGKILLed mid-run then resumed elsewhere."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from barrierflow.broker import RedisStore
from barrierflow.engine import MemoryStore, RunState
from barrierflow.engine.errors import WorkflowRunInProgressError
from barrierflow.workers import CeleryDispatcher, app
from tests import workflows_for_workers as flows

ROOT = Path(__file__).resolve().parents[2]


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_worker_killed_mid_superstep_costs_a_redispatch_never_a_lost_or_doubled_effect(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-effects"
    job = {"width": 5, "delay": 0.1}
    expected = await flows.bfw_effects().build(store=MemoryStore()).run({**job, "delay": 0})

    # A worker of its own, alone on a queue of its own, so the superstep's first task surely runs there.
    victim_queue = f"{celery_workers.queue}-victim"
    victim = f"{celery_workers.queue}-victim"
    celery_workers.start(victim, queue=victim_queue)
    celery_workers.wait_ready([victim])
    dispatcher = CeleryDispatcher(
        store=redis_store, queue=victim_queue, slots=2, redispatch_after=1.0, claim_ttl=0.6
    )
    wf = flows.bfw_effects().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    started = flows.side_key(instance_id, "started")
    survivors = [celery_workers.node(name) for name in celery_workers.procs if name != victim]
    run = asyncio.ensure_future(wf.run(job))
    try:
        await wait_until(
            lambda: asyncio.to_thread(flows.side().exists, started), 20, "a tally handler to start"
        )
        celery_workers.kill(victim)  # mid-superstep: its task has run some deliveries, none committed
        app.control.add_consumer(victim_queue, destination=survivors, reply=False)
        result = await asyncio.wait_for(run, 30)
    finally:
        app.control.cancel_consumer(victim_queue, destination=survivors, reply=False)
        await dispatcher.aclose()

    assert result.status is RunState.IDLE
    assert sorted(result.outputs) == sorted(expected.outputs)
    assert len(result.outputs) == len(set(result.outputs)) == 20  # each output committed exactly once
    latest = await redis_store.latest_checkpoint(instance_id)
    assert latest.executor_states == {name: {"count": 5, "sum": 10} for name in flows.TALLIES}
    # Handlers really ran more than once (the killed worker's deliveries ran again elsewhere) ...
    invocations = {
        k.decode(): int(v)
        for k, v in flows.side().hgetall(flows.side_key(instance_id, "invocations")).items()
    }
    assert set(invocations) == {f"{name}:{i}" for name in flows.TALLIES for i in range(5)}
    assert sum(invocations.values()) > 20
    # ... yet one superstep committed them once: supersteps 0 (input), 1 (spread), 2 (tallies), no other.
    assert [cp.superstep for cp in await redis_store.list_checkpoints(instance_id)] == [2, 1, 0]


async def test_a_killed_coordinator_leaves_its_lease_to_expire_and_another_process_resumes(
    celery_workers, redis_url: str, real_redis_prefix: str
) -> None:
    instance_id = f"{real_redis_prefix}-long"
    steps, ttl = 14, 1.5
    expected = await flows.bfw_long().build(store=MemoryStore()).run({"step": 1, "steps": steps, "delay": 0})
    coordinator = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/workers/coordinator_proc.py"),
            redis_url,
            real_redis_prefix,
            celery_workers.queue,
            instance_id,
            str(steps),
            "0.15",
            str(ttl),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=ttl)
    try:

        async def far_enough() -> bool:
            if coordinator.poll() is not None:
                raise AssertionError(f"coordinator exited early: {coordinator.stdout.read().decode()}")
            latest = await store.latest_checkpoint(instance_id)
            return latest is not None and latest.superstep >= 4

        await wait_until(far_enough, 30, "the coordinator to commit superstep 4")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(5)
        killed_at = (await store.latest_checkpoint(instance_id)).superstep
        assert (await store.describe(instance_id)).held  # the dead coordinator's lease is still there

        wf = flows.bfw_long().build(
            instance_id=instance_id,
            store=store,
            dispatcher=CeleryDispatcher(
                store=store, queue=celery_workers.queue, slots=2, redispatch_after=20
            ),
        )
        refused = 0
        while True:
            try:
                result = await wf.run()  # no message: continue what is queued
                break
            except WorkflowRunInProgressError:
                refused += 1
                await asyncio.sleep(0.2)
        assert refused > 0  # it had to wait for the lease to expire
        checkpoints = await store.list_checkpoints(instance_id)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        await store.aclose()

    assert result.outputs == expected.outputs == [{"total": steps * (steps + 1) // 2, "steps": steps}]
    supersteps = [cp.superstep for cp in reversed(checkpoints)]
    assert supersteps == list(range(supersteps[0], steps + 1)) and supersteps[-1] == steps
    assert killed_at < steps
    assert checkpoints[0].executor_states == {"stepper": steps}  # each step's effect committed once


async def test_a_task_running_longer_than_the_deadline_is_not_sent_again_while_claimed(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-slow"
    dispatcher = CeleryDispatcher(
        store=redis_store, queue=celery_workers.queue, slots=2, redispatch_after=0.3, claim_ttl=0.5
    )
    wf = flows.bfw_effects().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    result = await wf.run({"width": 1, "delay": 0.4})  # one task of 4 x 0.4 s, five deadlines long
    assert sorted(result.outputs) == [(name, 0) for name in flows.TALLIES]
    invocations = flows.side().hgetall(flows.side_key(instance_id, "invocations"))
    assert sorted(int(v) for v in invocations.values()) == [1, 1, 1, 1]  # no copy ran beside it
