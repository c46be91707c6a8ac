"""Retries, timeouts and sub-workflows on real Celery workers: they run inside the worker, within the superstep.

Parity with in-process runs (same outputs, events, checkpoints) is in ``test_workers_parity.py``; these tests
check what only a worker can show: where the attempts ran, that a task backing off is not re-sent as lost, and
that a worker killed between two attempts still ends with exactly one committed effect.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from barrierflow.engine import RunState
from barrierflow.engine.errors import ExecutorFailedError
from barrierflow.workers import CeleryDispatcher, app
from tests import workflows_for_workers as flows
from tests.workers.test_workers_crash_recovery import wait_until


def side_list(instance_id: str, name: str) -> list[int]:
    return [int(v) for v in flows.side().lrange(flows.side_key(instance_id, name), 0, -1)]


def attempts_of(instance_id: str, name: str) -> int:
    return int(flows.side().get(flows.side_key(instance_id, f"attempts:{name}")) or 0)


async def test_attempts_run_out_on_the_worker_and_the_caller_learns_how_many(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-exhausted"
    dispatcher = CeleryDispatcher(store=redis_store, queue=celery_workers.queue, slots=2, redispatch_after=20)
    wf = flows.bfw_retry().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    try:
        with pytest.raises(ExecutorFailedError) as caught:
            await wf.run({"fail": 9})
    finally:
        await dispatcher.aclose()
    error = caught.value
    assert (error.executor_id, error.error_type, error.attempts) == ("retried", "ConnectionError", 4)
    assert "after 4 attempts" in str(error) and "ConnectionError: attempt 4 failed" in error.traceback
    assert attempts_of(instance_id, "retried") == 4
    [checkpoint] = await redis_store.list_checkpoints(instance_id)
    assert checkpoint.superstep == 0 and checkpoint.shared_state == {}  # the last barrier


async def test_a_task_backing_off_between_attempts_is_not_sent_again(celery_workers, redis_store) -> None:
    """The backoff (1.5 s) spans several re-send deadlines (0.3 s): the task's claim, refreshed while it backs
    off, tells the coordinator it is running."""
    instance_id = f"{redis_store.prefix}-backoff"
    dispatcher = CeleryDispatcher(
        store=redis_store, queue=celery_workers.queue, slots=2, redispatch_after=0.3, claim_ttl=0.5
    )
    wf = flows.bfw_backoff().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    try:
        result = await wf.run("item")
    finally:
        await dispatcher.aclose()
    assert result.outputs == ["item after 2 attempts"]
    assert attempts_of(instance_id, "backs_off") == 2  # no copy of the task ran beside it
    pids = side_list(instance_id, "pids")
    assert len(set(pids)) == 1 and pids[0] != os.getpid()  # both attempts in one worker process
    latest = await redis_store.latest_checkpoint(instance_id)
    assert latest.shared_state == {"effects": ["item"]} and latest.executor_states == {"backs_off": 1}


async def test_a_sub_workflow_runs_inside_the_worker_and_asks_through_the_parent(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-sub"
    dispatcher = CeleryDispatcher(store=redis_store, queue=celery_workers.queue, slots=2, redispatch_after=20)
    try:
        wf = flows.bfw_sub().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
        paused = await wf.run("doc")
        assert paused.status is RunState.IDLE_WITH_PENDING_REQUESTS
        assert list(paused.pending_requests) == ["child-doc"]
        assert paused.pending_requests["child-doc"].executor_id == "review"
        # a new handle (as another coordinator would make) answers; the child continues on a worker
        again = flows.bfw_sub().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
        done = await again.run(responses={"child-doc": True})
    finally:
        await dispatcher.aclose()
    assert done.outputs == ["doc: approved"]
    child_pids = side_list(instance_id, "child-pids")
    assert len(child_pids) == 2 and os.getpid() not in child_pids


async def test_a_worker_killed_between_two_attempts_still_commits_the_effect_once(
    celery_workers, redis_store
) -> None:
    """Attempt 1 fails on the victim, which is SIGKILLed while it backs off; the task's claim lapses, the
    coordinator re-sends it, a survivor runs the delivery again from the committed state and succeeds."""
    instance_id = f"{redis_store.prefix}-retry-kill"
    victim_queue = f"{celery_workers.queue}-retry-victim"
    victim = "bftest-retry-victim-" + celery_workers.queue[-6:]
    celery_workers.start(victim, queue=victim_queue)
    celery_workers.wait_ready([victim])
    survivors = [celery_workers.node(name) for name in celery_workers.procs if name != victim]
    dispatcher = CeleryDispatcher(
        store=redis_store, queue=victim_queue, slots=1, redispatch_after=1.0, claim_ttl=0.6
    )
    wf = flows.bfw_backoff().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    run = asyncio.ensure_future(wf.run("item"))
    try:
        await wait_until(
            lambda: asyncio.to_thread(attempts_of, instance_id, "backs_off"), 30, "the first attempt to fail"
        )
        celery_workers.kill(victim)  # in its 1.5 s backoff: attempt 1's effects exist only in its memory
        app.control.add_consumer(victim_queue, destination=survivors, reply=True, timeout=5)
        result = await asyncio.wait_for(run, 60)
    finally:
        app.control.cancel_consumer(victim_queue, destination=survivors, reply=True, timeout=5)
        await dispatcher.aclose()

    assert result.outputs == ["item after 2 attempts"]  # attempt 2, on a survivor
    pids = side_list(instance_id, "pids")
    assert len(pids) == 2 and pids[0] != pids[1]  # attempt 1 on the victim, attempt 2 elsewhere
    latest = await redis_store.latest_checkpoint(instance_id)
    assert latest.shared_state == {"effects": ["item"]}  # the effect, committed exactly once
    assert latest.executor_states == {"backs_off": 1}
    assert [cp.superstep for cp in await redis_store.list_checkpoints(instance_id)] == [1, 0]
