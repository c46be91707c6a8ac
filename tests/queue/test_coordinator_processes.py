"""Coordinators as real processes (``barrierflow coordinator``): SIGKILL takeover, poison runs, SIGTERM hand-back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis

from barrierflow.broker import RunQueue
from barrierflow.engine import EventType, MemoryStore, RunState
from barrierflow.engine.errors import WorkflowError
from tests import queue_flows
from tests import workflows_for_workers as flows
from tests.queue.conftest import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def side(redis_url: str) -> redis.Redis:
    """The handlers' side channel as the coordinator processes write it: on the session's Redis (this
    process's own ``flows.side()`` may point elsewhere, cached by an earlier test)."""
    return redis.Redis.from_url(redis_url)


async def expected_outputs(job: dict) -> list:
    return (await queue_flows.q_steps().build(store=MemoryStore()).run({**job, "delay": 0})).outputs


async def coordinator_pids(runs: RunQueue, run_ids: list[str]) -> Counter:
    """How many of the runs each coordinator process (by pid) is driving now."""
    infos = [await runs.get(run_id) for run_id in run_ids]
    return Counter(int(i.coordinator.split(":")[1]) for i in infos if i.state == "running" and i.coordinator)


async def assert_each_committed_once(runs: RunQueue, run_ids: list[str], steps: int) -> None:
    """In each instance's stream: one ``run_ended``, and each step's output exactly once."""
    for run_id in run_ids:
        instance = run_id.rpartition("@")[0]
        events = [e async for e in runs.events(instance, follow=False) if e.run_id == run_id]
        assert [e.type for e in events].count(EventType.RUN_ENDED) == 1, run_id
        assert [e.data["step"] for e in events if e.type == EventType.OUTPUT] == list(range(1, steps + 1))


async def test_a_sigkilled_coordinator_loses_nothing(runs, coordinator_procs, side) -> None:
    """20 runs in flight on 2 coordinators; one is SIGKILLed: all complete, once, with in-process outputs."""
    lock_ttl = 2.0
    options = ("--lock-ttl", str(lock_ttl), "--concurrency", "16")
    victim = coordinator_procs.start("victim", *options)
    survivor = coordinator_procs.start("survivor", *options)
    job = {"step": 1, "steps": 8, "delay": 0.25}
    prefix = runs.keys.prefix
    tickets = [await runs.submit("q_steps", job, instance_id=f"{prefix}-k{i:02d}") for i in range(20)]
    run_ids = [t.run_id for t in tickets]

    async def both_busy() -> bool:
        pids = await coordinator_pids(runs, run_ids)
        return pids[victim.pid] >= 3 and pids[survivor.pid] >= 3

    await eventually(both_busy, 60, "both coordinators to drive runs")
    await asyncio.sleep(0.6)  # a few supersteps committed
    victims = [r for r in run_ids if (await runs.get(r)).coordinator.split(":")[1] == str(victim.pid)]
    victims = [r for r in victims if (await runs.get(r)).state == "running"]
    coordinator_procs.kill("victim")
    killed_at = time.monotonic()
    results = [await runs.wait(run_id, timeout=90) for run_id in run_ids]
    took = time.monotonic() - killed_at

    expected = await expected_outputs(job)
    assert all(r.outputs == expected and r.status is RunState.IDLE for r in results)
    await assert_each_committed_once(runs, run_ids, job["steps"])
    for run_id in victims:
        info = await runs.get(run_id)
        assert info.attempts == 2 and info.coordinator.split(":")[1] == str(survivor.pid), info
    # at least once: every step ran; a step the victim was in when it died may have run twice
    for ticket in tickets:
        executions = side.hgetall(flows.side_key(ticket.instance_id, "executions"))
        assert sorted(int(k) for k in executions) == list(range(1, 9))
        assert all(int(v) <= 2 for v in executions.values())
    assert took < 60, f"takeover took {took:.1f} s"  # DESIGN: lock_ttl + a few seconds (timing: not asserted)


async def test_a_poison_run_that_kills_every_coordinator_is_failed_after_max_attempts(
    runs, coordinator_procs, side
) -> None:
    options = ("--lock-ttl", "1", "--max-attempts", "2")
    instance = f"{runs.keys.prefix}-poison"
    ticket = await runs.submit("q_poison", "x", instance_id=instance)
    starts = 0
    deadline = time.monotonic() + 90
    while not (await runs.get(ticket.run_id)).ended:
        assert time.monotonic() < deadline, "the poison run never ended"
        if starts == 0 or coordinator_procs.procs[f"c{starts}"].poll() is not None:
            starts += 1  # the supervisor (systemd, Kubernetes...) restarts the dead coordinator
            coordinator_procs.start(f"c{starts}", *options, poison=True)
        await asyncio.sleep(0.1)
    with pytest.raises(WorkflowError, match="max_attempts=2"):
        await runs.wait(ticket.run_id, timeout=5)
    info = await runs.get(ticket.run_id)
    assert info.state == "failed" and info.attempts == 3  # two attempts died, the third start failed it
    assert int(side.hget(flows.side_key(instance, "poison"), "runs")) == 2
    # the service goes on: the coordinator that failed the run is alive and serves the next one
    fine = await runs.submit("q_append", {"n": 7})
    assert (await runs.wait(fine.run_id, timeout=30)).outputs == [[7]]


async def test_sigterm_hands_the_runs_in_flight_back_and_another_coordinator_continues_them(
    runs, coordinator_procs
) -> None:
    """A lease TTL of a minute: only a hand-back (not a takeover) lets the runs finish within seconds."""
    options = ("--lock-ttl", "60", "--shutdown-grace", "10")
    leaving = coordinator_procs.start("leaving", *options)
    job = {"step": 1, "steps": 10, "delay": 0.2}
    tickets = [await runs.submit("q_steps", job, instance_id=f"{runs.keys.prefix}-t{i}") for i in range(6)]
    run_ids = [t.run_id for t in tickets]

    async def all_running() -> bool:
        return (await coordinator_pids(runs, run_ids))[leaving.pid] == 6

    await eventually(all_running, 60, "the coordinator to drive all the runs")
    await asyncio.sleep(0.5)
    stopped_at = time.monotonic()
    coordinator_procs.kill("leaving", 15)  # SIGTERM
    assert await asyncio.to_thread(leaving.wait, 60) == 0
    assert time.monotonic() - stopped_at < 10 + 30  # shutdown_grace, and a loaded machine's process exit
    infos = [await runs.get(r) for r in run_ids]
    assert all(i.state == "queued" and i.attempts == 1 for i in infos), [i.state for i in infos]
    for ticket in tickets:
        assert (await runs.instance(ticket.instance_id)).holder is None  # leases released, not left to expire
    coordinator_procs.start("arriving", *options)
    results = [await runs.wait(r, timeout=40) for r in run_ids]
    expected = await expected_outputs(job)
    assert all(r.outputs == expected for r in results)
    assert [(await runs.get(r)).attempts for r in run_ids] == [2] * 6
    await assert_each_committed_once(runs, run_ids, job["steps"])
    assert "coordinator" in coordinator_procs.log_of("leaving") and "stopped" in coordinator_procs.log_of(
        "leaving"
    )
