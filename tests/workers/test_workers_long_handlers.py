"""Handlers of any length on the workers: the coordinator's blocking waits never outlive its socket timeout."""

from __future__ import annotations

import pytest

from barrierflow.broker import RedisStore
from barrierflow.engine import RunState
from barrierflow.workers import CeleryDispatcher
from tests import workflows_for_workers as flows


async def run_sleepy(redis_url: str, prefix: str, queue: str, seconds: float, **options) -> object:
    """A handler of ``seconds`` on a worker; the coordinator checks every 30 s, its lease is 30 s."""
    async with (
        RedisStore.from_url(redis_url, prefix=prefix, **options) as store,
        CeleryDispatcher(store=store, queue=queue, slots=2) as dispatcher,
    ):
        wf = flows.bfw_sleepy().build(instance_id=f"{prefix}-sleepy", store=store, dispatcher=dispatcher)
        return await wf.run(seconds)


async def test_an_8_s_handler_on_a_worker(celery_workers, redis_url: str, real_redis_prefix: str) -> None:
    """Before: BRPOP blocked up to 30 s on redis-py 8's 5 s socket timeout: "Timeout reading from ...".

    No retries here, so a retry cannot hide a wait longer than the socket timeout (redis-py's own default of
    10 retries hid it for handlers up to about a minute: the 70 s test below).
    """
    result = await run_sleepy(
        redis_url, real_redis_prefix, celery_workers.queue, 8.0, socket_timeout=4.0, retries=0
    )
    assert result.status is RunState.IDLE and result.outputs == ["slept 8 s"]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_70_s_handler_on_a_worker(celery_workers, redis_url: str, real_redis_prefix: str) -> None:
    """Longer than the lease (30 s), the check interval (30 s) and the socket timeout (30 s) together."""
    result = await run_sleepy(redis_url, real_redis_prefix, celery_workers.queue, 70.0)
    assert result.status is RunState.IDLE and result.outputs == ["slept 70 s"]
    invocations = [e for e in result.events if e.type == "executor_invoked"]
    assert len(invocations) == 1  # never re-sent while it ran
