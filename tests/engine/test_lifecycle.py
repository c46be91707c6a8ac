"""Run lifecycle: synchronous reservation, refusals while reserved, drops, races, cancellation, event loops."""

from __future__ import annotations

import asyncio
import gc

import pytest

from barrierflow.engine import (
    ConvergenceError,
    Executor,
    Lifecycle,
    RunResult,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowNotIdleError,
    WorkflowRunInProgressError,
    handler,
)

from .bf_helpers import checkpoints, latest, queued

GATES: dict[str, asyncio.Event] = {}


@pytest.fixture
def gate():
    """``entered`` is set when the Gate executor starts waiting; set ``open`` to let it finish."""
    GATES.clear()
    GATES["entered"] = asyncio.Event()
    GATES["open"] = asyncio.Event()
    yield GATES
    GATES["open"].set()
    GATES.clear()


class First(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("first", msg)
        await ctx.send_message(msg)


class Gate(Executor):
    """Blocks on messages starting with 'block' until the test opens the gate."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        if msg.startswith("block"):
            GATES["entered"].set()
            await GATES["open"].wait()
        ctx.set_state("gate", msg)
        await ctx.send_message(msg)


class Last(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"done:{msg}")


def builder() -> WorkflowBuilder:
    first, gate, last = First(id="first"), Gate(id="gate"), Last(id="last")
    return WorkflowBuilder(name="lifecycle", start_executor=first).add_chain([first, gate, last])


def build(store=None, instance_id=None):
    return builder().build(store=store, instance_id=instance_id)


async def _loop_turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def test_run_reserves_synchronously_and_refuses_everything_else(store):
    wf = build(store)
    await wf.run("warmup")
    cp_id = (await latest(wf)).checkpoint_id
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]

    call = wf.run("x")  # not awaited yet
    assert wf.lifecycle == Lifecycle.RESERVED
    assert wf.status == RunState.IN_PROGRESS
    with pytest.raises(WorkflowRunInProgressError):
        wf.run("y")  # at call time, no await
    with pytest.raises(WorkflowRunInProgressError):
        wf.stream("y")
    with pytest.raises(WorkflowRunInProgressError):
        await wf.create_checkpoint()
    with pytest.raises(WorkflowRunInProgressError):
        await wf.restore(cp_id)
    with pytest.raises(WorkflowRunInProgressError):
        await wf.reset_for_new_run()
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before  # refusals wrote nothing

    result = await call
    assert result.outputs == ["done:x"]
    assert wf.lifecycle == Lifecycle.IDLE
    assert wf.status == RunState.IDLE


async def test_stream_reserves_at_call_time(store):
    wf = build(store)
    stream = wf.stream("x")
    assert wf.lifecycle == Lifecycle.RESERVED
    with pytest.raises(WorkflowRunInProgressError):
        wf.run("y")
    events = [event async for event in stream]
    result = await stream.result()
    assert result.events == events
    assert result.outputs == ["done:x"]
    assert wf.lifecycle == Lifecycle.IDLE


async def test_lifecycle_running_while_handlers_run(store, gate):
    wf = build(store)
    task = asyncio.create_task(wf.run("block"))
    await asyncio.wait_for(gate["entered"].wait(), 5)
    assert wf.lifecycle == Lifecycle.RUNNING
    assert wf.status == RunState.IN_PROGRESS
    with pytest.raises(WorkflowRunInProgressError):
        wf.run("other")
    gate["open"].set()
    result = await task
    assert isinstance(result, RunResult)
    assert result.outputs == ["done:block"]
    assert wf.lifecycle == Lifecycle.IDLE


async def test_create_task_of_run_works(store):
    wf = build(store)
    task = asyncio.create_task(wf.run("t"))
    result = await task
    assert result.outputs == ["done:t"]


async def test_concurrent_runs_on_one_handle_exactly_one_wins(store, gate):
    wf = build(store)

    async def attempt(message: str):
        return await wf.run(message)

    results = await asyncio.gather(
        attempt("block-a"), attempt("b"), attempt("c"), _open_later(gate), return_exceptions=True
    )
    runs = results[:3]
    assert sum(isinstance(r, RunResult) for r in runs) == 1
    assert sum(isinstance(r, WorkflowRunInProgressError) for r in runs) == 2
    assert runs[0].outputs == ["done:block-a"]


async def _open_later(gate) -> None:
    await asyncio.wait_for(gate["entered"].wait(), 5)
    gate["open"].set()


async def test_concurrent_runs_on_two_handles_exactly_one_wins(store, gate):
    one = build(store, instance_id="shared-instance")
    two = build(store, instance_id="shared-instance")

    async def attempt(wf, message):
        return await wf.run(message)

    results = await asyncio.gather(
        attempt(one, "block-1"), attempt(two, "block-2"), _open_later(gate), return_exceptions=True
    )
    runs = results[:2]
    assert sum(isinstance(r, RunResult) for r in runs) == 1, runs
    assert sum(isinstance(r, WorkflowRunInProgressError) for r in runs) == 1, runs
    assert one.lifecycle == two.lifecycle == Lifecycle.IDLE
    # the instance is free again for either handle
    assert (await two.run("after")).outputs == ["done:after"]


async def test_unawaited_run_dropped_releases(store):
    wf = build(store)
    call = wf.run("never")
    assert wf.lifecycle == Lifecycle.RESERVED
    del call
    gc.collect()
    await _loop_turns()
    assert wf.lifecycle == Lifecycle.IDLE
    assert await checkpoints(wf) == []  # the dropped run never started
    assert (await wf.run("next")).outputs == ["done:next"]


async def test_uniterated_stream_dropped_releases(store):
    wf = build(store)
    stream = wf.stream("never")
    assert wf.lifecycle == Lifecycle.RESERVED
    del stream
    gc.collect()
    await _loop_turns()
    assert wf.lifecycle == Lifecycle.IDLE
    assert await checkpoints(wf) == []
    assert (await wf.run("next")).outputs == ["done:next"]


async def test_half_consumed_stream_finalized_late_never_releases_a_newer_run(store, gate):
    wf = build(store, instance_id="late-finalizer")
    other_handle = build(store, instance_id="late-finalizer")
    stream = wf.stream("block-old")
    async for event in stream:
        if event.type == "superstep_completed" and event.superstep == 1:
            break
    # the old run stopped at the barrier of superstep 1: the gate's message is queued
    assert queued(await latest(wf)) == [("gate", "block-old")]
    del stream, event  # dropped half-consumed; its generator is not finalized yet

    newer = wf.run()  # continues the queued work, reserving the instance now
    assert wf.lifecycle == Lifecycle.RESERVED
    task = asyncio.create_task(newer)
    await asyncio.wait_for(gate["entered"].wait(), 5)

    gc.collect()
    await _loop_turns()  # the old stream's generator is finalized now
    gc.collect()
    await _loop_turns()

    assert wf.lifecycle == Lifecycle.RUNNING  # the newer run still holds the instance
    with pytest.raises(WorkflowRunInProgressError):
        wf.run("third")
    with pytest.raises(WorkflowRunInProgressError):
        await other_handle.run("third")
    info = await store.describe("late-finalizer")
    assert info.held

    gate["open"].set()
    result = await task
    assert result.outputs == ["done:block-old"]
    assert result.status == RunState.IDLE
    assert wf.status == RunState.IDLE  # the old stream's late cleanup did not mark the instance failed
    assert wf.lifecycle == Lifecycle.IDLE


async def test_consumer_cancellation_releases_and_keeps_last_barrier(store, gate):
    wf = build(store)
    task = asyncio.create_task(wf.run("block"))
    await asyncio.wait_for(gate["entered"].wait(), 5)
    barrier = await latest(wf)
    assert barrier.superstep == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wf.lifecycle == Lifecycle.IDLE
    cp = await latest(wf)
    assert cp.checkpoint_id == barrier.checkpoint_id
    assert queued(cp) == [("gate", "block")]
    assert cp.shared_state == {"first": "block"}
    assert not (await store.describe(wf.instance_id)).held

    gate["open"].set()
    result = await wf.run()  # continues from the barrier
    assert result.outputs == ["done:block"]
    assert wf.status == RunState.IDLE


async def test_stream_aclose_releases(store):
    wf = build(store)
    stream = wf.stream("x")
    await stream.__anext__()
    await stream.aclose()
    assert wf.lifecycle == Lifecycle.IDLE
    assert (await wf.run("y")).outputs == ["done:y"]


def test_reuse_across_event_loops(store):
    wf = build(store)
    first = asyncio.run(wf.run("loop1"))
    second = asyncio.run(wf.run("loop2"))
    assert first.outputs == ["done:loop1"]
    assert second.outputs == ["done:loop2"]
    assert wf.lifecycle == Lifecycle.IDLE


async def test_five_sequential_runs(store):
    wf = build(store)
    run_ids = set()
    for i in range(5):
        result = await wf.run(f"m{i}")
        assert result.outputs == [f"done:m{i}"]
        assert result.status == RunState.IDLE
        run_ids.add(result.run_id)
    assert len(run_ids) == 5
    assert len(await checkpoints(wf)) == 5 * 4


async def test_message_with_checkpoint_id_is_a_value_error(store):
    wf = build(store)
    await wf.run("a")
    cp_id = (await latest(wf)).checkpoint_id
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(ValueError):
        await wf.run("b", checkpoint_id=cp_id)
    with pytest.raises(ValueError):
        async for _ in wf.stream("b", checkpoint_id=cp_id):
            pass
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    assert wf.lifecycle == Lifecycle.IDLE


async def test_nothing_queued_is_a_value_error(store):
    wf = build(store)
    with pytest.raises(ValueError) as info:
        await wf.run()
    assert wf.instance_id in str(info.value)
    assert await checkpoints(wf) == []
    assert wf.lifecycle == Lifecycle.IDLE
    assert wf.status == RunState.IDLE
    await wf.run("a")
    with pytest.raises(ValueError):
        await wf.run()
    assert wf.status == RunState.IDLE


class Spin(Executor):
    @handler
    async def on(self, n: int, ctx: WorkflowContext) -> None:
        if n < 3:
            await ctx.send_message(n + 1)
        else:
            await ctx.yield_output(n)


async def test_new_message_while_work_is_queued_is_not_idle(store):
    spin = Spin(id="spin")
    wf = WorkflowBuilder(start_executor=spin, max_supersteps=2).add_edge(spin, spin).build(store=store)
    with pytest.raises(ConvergenceError):
        await wf.run(0)
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(WorkflowNotIdleError) as info:
        await wf.run(100)
    assert "run()" in str(info.value) and "reset_for_new_run()" in str(info.value)
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    assert queued(await latest(wf)) == [("spin", 2)]
    assert wf.lifecycle == Lifecycle.IDLE
    result = await wf.run()
    assert result.outputs == [3]


async def test_executor_events_are_streamed_while_handlers_run(store, gate):
    wf = build(store)
    stream = wf.stream("block")
    while True:
        event = await asyncio.wait_for(stream.__anext__(), 5)
        if event.type == "executor_invoked" and event.executor_id == "gate":
            break
    await asyncio.wait_for(gate["entered"].wait(), 5)
    assert not gate["open"].is_set()  # the handler is still running: the event came live
    gate["open"].set()
    result = await stream.result()
    assert result.outputs == ["done:block"]


async def test_half_consumed_stream_dropped_releases_and_keeps_last_barrier(store):
    wf = build(store)
    stream = wf.stream("x")
    async for event in stream:
        if event.type == "superstep_completed":
            break
    barrier = await latest(wf)
    del stream, event
    gc.collect()
    await _loop_turns()
    assert wf.lifecycle == Lifecycle.IDLE
    assert not (await store.describe(wf.instance_id)).held
    assert (await latest(wf)).checkpoint_id == barrier.checkpoint_id
    assert queued(barrier) == [("gate", "x")]
    assert (await wf.run()).outputs == ["done:x"]


async def test_late_generator_finalization_after_newer_run_started_does_not_touch_it(store, gate):
    """Deterministic variant of the race above: the abandoned stream's generator outlives the stream (as it
    does when it sits in a reference cycle) and is finalized only after the newer run has started."""
    wf = build(store, instance_id="late-finalizer-2")
    stream = wf.stream("block-old")
    async for event in stream:
        if event.type == "superstep_completed" and event.superstep == 1:
            break
    lingering = [stream._session.events]  # stands in for a reference cycle holding the generator
    del stream, event
    gc.collect()
    assert wf.lifecycle == Lifecycle.IDLE  # dropping the stream released its reservation

    task = asyncio.create_task(wf.run())
    await asyncio.wait_for(gate["entered"].wait(), 5)
    assert wf.lifecycle == Lifecycle.RUNNING

    lingering.clear()  # now the old generator is garbage: the loop finalizes it while the newer run runs
    gc.collect()
    await _loop_turns()
    gc.collect()
    await _loop_turns()

    assert wf.lifecycle == Lifecycle.RUNNING
    assert wf.status == RunState.IN_PROGRESS
    with pytest.raises(WorkflowRunInProgressError):
        wf.run("third")
    assert (await store.describe("late-finalizer-2")).held

    gate["open"].set()
    result = await task
    assert result.outputs == ["done:block-old"]
    assert [e.data for e in result.events if e.type == "status"][-1] == RunState.IDLE
    assert result.status == RunState.IDLE
    assert wf.status == RunState.IDLE


async def test_message_none_means_no_message_as_the_contract_signature_says(store):
    wf = build(store)
    first = await wf.run("a")
    with pytest.raises(ValueError, match="nothing to run"):
        await wf.run(None)
    resumed = await wf.run(None, checkpoint_id=first.checkpoint_id)  # not "message and checkpoint_id"
    assert resumed.status == RunState.IDLE
    assert (await latest(wf)).previous_checkpoint_id == first.checkpoint_id
