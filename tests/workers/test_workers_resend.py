"""Re-sending is bounded: a queued task is never sent again; a task whose worker died is, with backoff and a cap.

The queue is counted where kombu keeps it: a Redis list named after the queue (``LLEN``).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from barrierflow.broker.results import ClaimStatus, ResultKeys, ResultWriter
from barrierflow.engine import RunState
from barrierflow.engine.errors import WorkflowError
from barrierflow.engine.events import EventType
from barrierflow.workers import CeleryDispatcher, app
from tests import workflows_for_workers as flows
from tests.redis_hygiene import SESSION, forget_celery_nodes


async def drain(stream, into: list) -> object:
    async for event in stream:
        into.append(event)
    return await stream.result()


async def no_worker_then_a_worker(
    celery_workers, redis_store, redis_url, *, wait: float, every: float, start
):
    """Run on a queue nobody consumes for ``wait`` s, counting its copies; then ``start`` a consumer."""
    deaf = f"{celery_workers.queue}-deaf-{int(wait)}"
    queue = redis.Redis.from_url(redis_url)
    dispatcher = CeleryDispatcher(store=redis_store, queue=deaf, slots=2, redispatch_after=every)
    wf = flows.bfw_versioned().build(
        instance_id=f"{redis_store.prefix}-deaf", store=redis_store, dispatcher=dispatcher
    )
    events: list = []
    run = asyncio.ensure_future(drain(wf.stream("hi"), events))
    most = 0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        most = max(most, queue.llen(deaf))
        await asyncio.sleep(0.05)
    copies = queue.llen(deaf)
    stop = start(deaf)
    try:
        result = await asyncio.wait_for(run, 60)
    finally:
        stop()
        await dispatcher.aclose()
        queue.delete(deaf)
    return copies, most, events, result


async def test_a_queued_task_is_never_sent_again_and_the_caller_is_told(
    celery_workers, redis_store, redis_url
) -> None:
    survivors = [celery_workers.node(name) for name in celery_workers.procs]

    def add_consumer(deaf: str):
        app.control.add_consumer(deaf, destination=survivors, reply=False)
        return lambda: app.control.cancel_consumer(deaf, destination=survivors, reply=False)

    # 15 checks of an unanswered task (before the fix: 11 copies after 3 s at 0.2 s)
    copies, most, events, result = await no_worker_then_a_worker(
        celery_workers, redis_store, redis_url, wait=3.0, every=0.2, start=add_consumer
    )
    assert copies == most == 1
    warnings = [e for e in events if e.type == EventType.WARNING]
    assert warnings, "the caller must be told that no worker takes tasks"
    assert "no worker has taken task(s) [0]" in warnings[0].data and warnings[0].details["tasks"] == [0]
    assert "no live worker consumes it" in warnings[0].data  # the worker registry says why
    assert 2 <= len(warnings) <= 6  # at growing intervals, not at every check
    assert result.status is RunState.IDLE and result.outputs == ["hi"]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_no_worker_for_60_s_leaves_one_copy_per_task_and_the_run_completes_when_one_starts(
    celery_workers, redis_store, redis_url
) -> None:
    def start_worker(deaf: str):
        name = f"bftest-late-{SESSION}"
        celery_workers.start(name, queue=deaf)

        def stop() -> None:
            proc = celery_workers.procs.pop(name)
            proc.terminate()
            proc.wait(20)
            forget_celery_nodes(redis_url, [celery_workers.node(name)])

        return stop

    copies, most, _, result = await no_worker_then_a_worker(
        celery_workers, redis_store, redis_url, wait=60.0, every=1.0, start=start_worker
    )
    assert copies == most == 1  # one task, one copy, after 60 checks
    assert result.status is RunState.IDLE and result.outputs == ["hi"]


async def test_a_task_whose_workers_keep_dying_is_sent_again_with_backoff_then_fails(
    celery_workers, redis_store, redis_url
) -> None:
    """Each copy is taken off the queue and claimed as a worker does, then its worker "dies" (no refresh)."""
    deaf = f"{celery_workers.queue}-dying"
    instance_id = f"{redis_store.prefix}-dying"
    queue = redis.Redis.from_url(redis_url)
    writer = ResultWriter(redis.Redis.from_url(redis_url))
    dispatcher = CeleryDispatcher(
        store=redis_store, queue=deaf, slots=2, redispatch_after=0.2, claim_ttl=0.3, max_attempts=4
    )
    wf = flows.bfw_versioned().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    run = asyncio.ensure_future(wf.run("hi"))
    taken: list[float] = []
    try:
        while not run.done() and len(taken) < 6:
            if queue.llen(deaf) > 1:
                raise AssertionError("a second copy was queued beside one still waiting")
            message = queue.rpop(deaf)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            assert json.loads(message)["headers"]["task"] == "barrierflow.run_batches"
            taken.append(time.monotonic())
            keys = await result_keys(redis_store, instance_id)
            token, epoch = await redis_store.client.mget(keys.lock, keys.epoch)
            claim = writer.claim(
                keys, 0, token.decode(), int(epoch), send=len(taken), ttl=0.3, started_ttl=60
            )
            assert not isinstance(claim, ClaimStatus)
            claim._stop.set()  # the worker dies: its claim is never refreshed nor released
        with pytest.raises(WorkflowError, match=r"task\(s\) \[0\] .* were sent 4 times and every worker"):
            await asyncio.wait_for(run, 30)
    finally:
        run.cancel()
        await dispatcher.aclose()
        queue.delete(deaf)
    assert len(taken) == 4  # the cap
    # checks of a task whose worker died back off: send n+1 comes at least 0.2 * 2**(n-1) s after send n
    # (the copies are noticed here by polling every 20 ms, hence the slack)
    assert taken[2] - taken[1] >= 0.35 and taken[3] - taken[2] >= 0.75
    [checkpoint] = await redis_store.list_checkpoints(instance_id)
    assert checkpoint.superstep == 0 and len(checkpoint.messages) == 1  # left at the last barrier


async def result_keys(store, instance_id: str) -> ResultKeys:
    owner = json.loads(await store.client.get(store.keys.owner(instance_id)))
    epoch = int(await store.client.get(store.keys.epoch(instance_id)))
    return ResultKeys(store.prefix, instance_id, owner["run_id"], epoch, 1)
