"""What the coordinator sees when a worker cannot or does not run a task as asked."""

from __future__ import annotations

import asyncio
import re

import pytest

from barrierflow.engine import RunState, WorkflowBuilder
from barrierflow.engine.errors import (
    ExecutorFailedError,
    GraphSignatureMismatchError,
    ReservationLostError,
    SerializationError,
    WorkflowError,
)
from barrierflow.workers import CeleryDispatcher
from tests import workflows_for_workers as flows


def dispatcher_for(store, celery_workers, **options) -> CeleryDispatcher:
    options.setdefault("slots", 2)
    options.setdefault("redispatch_after", 20.0)
    options.setdefault("queue", celery_workers.queue)
    return CeleryDispatcher(store=store, **options)


async def test_a_graph_signature_mismatch_is_refused_naming_both_signatures(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-versioned"
    newer = flows.bfw_versioned_v2()  # the coordinator runs a newer definition than the workers have
    wf = newer.build(
        instance_id=instance_id, store=redis_store, dispatcher=dispatcher_for(redis_store, celery_workers)
    )
    worker_signature = flows.bfw_versioned().build_graph().signature
    assert wf.graph_signature != worker_signature

    with pytest.raises(GraphSignatureMismatchError) as info:
        await wf.run("hi")
    message = str(info.value)
    assert wf.graph_signature in message and worker_signature in message
    assert "bfw_versioned" in message

    # Nothing of superstep 1 was committed: the only checkpoint is the run's input (superstep 0), still queued.
    [checkpoint] = await redis_store.list_checkpoints(instance_id)
    assert checkpoint.superstep == 0
    assert [(d.target_id, d.message) for d in checkpoint.messages] == [("first", "hi")]
    assert wf.status is RunState.FAILED


async def test_a_handler_exception_on_a_worker_reaches_the_caller_with_its_remote_details(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-fuse"
    flows.side().set(flows.side_key(instance_id, "fuse"), 1)
    wf = flows.bfw_fuse().build(
        instance_id=instance_id, store=redis_store, dispatcher=dispatcher_for(redis_store, celery_workers)
    )
    with pytest.raises(ExecutorFailedError) as info:
        await wf.run("payload")
    error = info.value
    assert (error.executor_id, error.error_type) == ("fragile", "ValueError")
    assert error.message == f"fuse armed for {instance_id}: refusing 'payload'"
    assert "workflows_for_workers.py" in error.traceback
    assert re.search(r'raise ValueError\(f"fuse armed', error.traceback)
    assert error.__cause__ is None  # the original exception lives in another process
    assert wf.status is RunState.FAILED

    # Left exactly as at the last barrier: superstep 1 (fork) committed, superstep 2's inputs still queued,
    # and none of superstep 2's writes (steady's state, outputs) committed.
    latest = await redis_store.latest_checkpoint(instance_id)
    assert latest.superstep == 1
    assert sorted(d.target_id for d in latest.messages) == ["fragile", "steady"]
    assert latest.executor_states == {}
    assert latest.shared_state == {"input": "payload"}

    flows.side().delete(flows.side_key(instance_id, "fuse"))
    retried = await wf.run()
    assert retried.outputs == ["steady:payload", "fragile:payload"]
    assert retried.status is RunState.IDLE
    final = await redis_store.latest_checkpoint(instance_id)
    assert final.executor_states == {"steady": 1, "fragile": 1}  # the failed attempt left no count behind


async def test_a_lease_lost_while_waiting_on_the_workers_stops_the_superstep(
    celery_workers, redis_store
) -> None:
    instance_id = f"{redis_store.prefix}-stolen"
    deaf_queue = f"{celery_workers.queue}-nobody"
    dispatcher = dispatcher_for(redis_store, celery_workers, queue=deaf_queue, redispatch_after=0.3)
    wf = flows.bfw_versioned().build(instance_id=instance_id, store=redis_store, dispatcher=dispatcher)
    run = asyncio.ensure_future(wf.run("hi"))
    await asyncio.sleep(0.15)
    await redis_store.client.delete(redis_store.keys.lock(instance_id))  # as if the lease had expired
    with pytest.raises(ReservationLostError, match="nothing of it was committed"):
        await run
    [checkpoint] = await redis_store.list_checkpoints(instance_id)
    assert checkpoint.superstep == 0


async def test_a_workflow_the_workers_do_not_know_is_refused_by_name(celery_workers, redis_store) -> None:
    builder = WorkflowBuilder(name="bfw_unknown_to_workers", start_executor=flows.first).add_edge(
        flows.first, flows.second
    )
    wf = builder.build(
        instance_id=f"{redis_store.prefix}-unknown",
        store=redis_store,
        dispatcher=dispatcher_for(redis_store, celery_workers),
    )
    with pytest.raises(
        WorkflowError, match=r"no workflow registered as 'bfw_unknown_to_workers'.*BARRIERFLOW_IMPORTS"
    ):
        await wf.run("hi")


async def test_an_unencodable_message_fails_like_it_does_in_process(celery_workers, redis_store) -> None:
    local = flows.bfw_unencodable().build(instance_id=f"{redis_store.prefix}-leak-local", store=redis_store)
    with pytest.raises(SerializationError) as in_process:
        await local.run("x")
    remote = flows.bfw_unencodable().build(
        instance_id=f"{redis_store.prefix}-leak-celery",
        store=redis_store,
        dispatcher=dispatcher_for(redis_store, celery_workers),
    )
    with pytest.raises(SerializationError) as on_worker:
        await remote.run("x")
    assert "Opaque" in str(in_process.value) and "Opaque" in str(on_worker.value)
    assert [cp.superstep for cp in await redis_store.list_checkpoints(remote.instance_id)] == [0]


async def test_an_unencodable_output_fails_the_same_way_in_process_and_on_a_worker(
    celery_workers, redis_store
) -> None:
    errors = []
    for mode in ("local", "celery"):
        dispatcher = dispatcher_for(redis_store, celery_workers) if mode == "celery" else None
        wf = flows.bfw_output_lambda().build(
            instance_id=f"{redis_store.prefix}-lambda-{mode}", store=redis_store, dispatcher=dispatcher
        )
        with pytest.raises(SerializationError) as caught:
            await wf.run("x")
        errors.append(str(caught.value))
        assert wf.status == RunState.FAILED
        [checkpoint] = await redis_store.list_checkpoints(wf.instance_id)
        assert checkpoint.superstep == 0 and checkpoint.shared_state == {}  # superstep 1 never committed
    in_process, on_worker = errors
    assert in_process.startswith("the output yielded by 'yields_code': cannot encode value of type")
    assert "function" in in_process
    assert on_worker == in_process
