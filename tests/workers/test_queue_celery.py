"""The run queue with a coordinator whose handlers run on real Celery workers (``CeleryDispatcher``)."""

from __future__ import annotations

import asyncio

import pytest

from barrierflow.broker import RedisStore, RunQueue
from barrierflow.engine import MemoryStore, RunState
from barrierflow.engine.errors import RunCancelledError
from barrierflow.workers import CeleryDispatcher, Coordinator
from tests import workflows_for_workers as flows


async def test_queued_runs_execute_on_celery_workers(celery_workers, redis_url, real_redis_prefix) -> None:
    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=5)
    dispatcher = CeleryDispatcher(store=store, queue=celery_workers.queue, slots=2)
    async with RunQueue(store) as runs, Coordinator(store, dispatcher, shutdown_grace=10) as coordinator:
        serving = asyncio.ensure_future(coordinator.serve(handle_signals=False))
        cases = [(flows.bfw_fan, "one two three"), (flows.bfw_switch, [2, 3, 300]), (flows.bfw_loop, 1)]
        tickets = [await runs.submit(factory, message) for factory, message in cases]
        for (factory, message), ticket in zip(cases, tickets, strict=True):
            expected = await factory().build(store=MemoryStore()).run(message)
            result = await runs.wait(ticket.run_id, timeout=60)
            assert result.outputs == expected.outputs and result.status is RunState.IDLE

        # human in the loop, answered through the queue
        asked = await runs.submit("bfw_hitl", "x,y")
        paused = await runs.wait(asked.run_id, timeout=60)
        assert sorted(paused.pending_requests) == ["req-x", "req-y"]
        answered = await runs.submit(
            "bfw_hitl", responses={"req-x": True, "req-y": False}, instance_id=asked.instance_id
        )
        assert sorted((await runs.wait(answered.run_id, timeout=60)).outputs) == [
            "approve x? -> yes",
            "approve y? -> no",
        ]

        # cancel a run while its superstep is on the workers: its result is ignored, the instance stays at the
        # last barrier, and a later run continues from there to the in-process outcome
        job = {"step": 1, "steps": 6, "delay": 0.4}
        long = await runs.submit("bfw_long", job, instance_id=f"{real_redis_prefix}-long")
        while (latest := await store.latest_checkpoint(long.instance_id)) is None or latest.superstep < 2:
            await asyncio.sleep(0.05)
        assert await runs.cancel(long.run_id)
        with pytest.raises(RunCancelledError):
            await runs.wait(long.run_id, timeout=30)
        stopped = await store.latest_checkpoint(long.instance_id)
        assert stopped.messages and stopped.superstep < 6
        rest = await runs.submit("bfw_long", instance_id=long.instance_id)
        expected = await flows.bfw_long().build(store=MemoryStore()).run({**job, "delay": 0})
        assert (await runs.wait(rest.run_id, timeout=60)).outputs == expected.outputs
        await coordinator.stop()
        await serving
    await dispatcher.aclose()
    await store.aclose()
