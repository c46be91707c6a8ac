"""What a superstep on the workers leaves in Redis once collected, and a failed clean-up never hides the outcome."""

from __future__ import annotations

import pytest
import redis

from barrierflow.broker.results import ResultReader
from barrierflow.engine import RunState
from barrierflow.engine.errors import ExecutorFailedError
from barrierflow.workers import CeleryDispatcher
from tests import workflows_for_workers as flows


def dispatcher_for(store, celery_workers) -> CeleryDispatcher:
    return CeleryDispatcher(store=store, queue=celery_workers.queue, slots=2)


async def test_a_collected_superstep_leaves_only_its_marker(celery_workers, redis_store) -> None:
    instance_id = f"{redis_store.prefix}-tidy"
    wf = flows.bfw_effects().build(
        instance_id=instance_id, store=redis_store, dispatcher=dispatcher_for(redis_store, celery_workers)
    )
    result = await wf.run({"width": 3, "delay": 0})
    assert result.status is RunState.IDLE and len(result.outputs) == 12
    keys = [
        k.decode() async for k in redis_store.client.scan_iter(match=redis_store.keys.pattern(instance_id))
    ]
    assert [k for k in keys if ":bfw:" in k] == [f"{redis_store.prefix}:{{{instance_id}}}:bfw:collected"]
    assert await redis_store.client.pttl(redis_store.keys.user_key(instance_id, "bfw:collected")) > 0


async def broken_discard(*args, **kwargs) -> None:
    raise redis.ConnectionError("Redis went away during the clean-up")


async def test_a_failed_clean_up_never_replaces_the_runs_own_error(
    celery_workers, redis_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ResultReader, "discard", broken_discard)
    instance_id = f"{redis_store.prefix}-fuse-cleanup"
    flows.side().set(flows.side_key(instance_id, "fuse"), 1)
    wf = flows.bfw_fuse().build(
        instance_id=instance_id, store=redis_store, dispatcher=dispatcher_for(redis_store, celery_workers)
    )
    with pytest.raises(ExecutorFailedError, match="fuse armed"):
        await wf.run("payload")

    flows.side().delete(flows.side_key(instance_id, "fuse"))
    result = await wf.run()  # a clean-up that fails after a good superstep is logged, not raised
    assert result.status is RunState.IDLE
