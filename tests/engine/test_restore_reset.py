"""restore(): a copy parented by the restored checkpoint; reset_for_new_run(): all-or-nothing clean slate."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from barrierflow.engine import (
    ConvergenceError,
    Executor,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowError,
    WorkflowRunInProgressError,
    handler,
    response_handler,
)

from .bf_helpers import checkpoints, latest, queued

RESETS: list[str] = []
BROKEN_RESET = {"on": False}


@pytest.fixture(autouse=True)
def _clear():
    RESETS.clear()
    BROKEN_RESET["on"] = False
    yield
    RESETS.clear()
    BROKEN_RESET["on"] = False


@dataclass
class Ask:
    what: str


class Start(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("input", msg)
        ctx.set_executor_state(ctx.get_executor_state(0) + 1)
        await ctx.send_message(msg)

    async def reset(self) -> None:
        RESETS.append(self.id)


class Half(Executor):
    """Sends on to the join and asks a question."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_executor_state({"got": msg})
        await ctx.send_message(f"{ctx.executor_id}:{msg}")
        if msg.startswith("ask"):
            await ctx.request_info(Ask(msg), str, request_id=f"{ctx.executor_id}-{msg}")

    @response_handler
    async def on_answer(self, original: Ask, answer: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(answer)

    async def reset(self) -> None:
        RESETS.append(self.id)
        if BROKEN_RESET["on"] and self.id == "right":
            raise OSError("session already closed")


class Silent(Executor):
    """Never sends, so a fan-in it feeds keeps its buffer."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("silent", True)


class Join(Executor):
    @handler
    async def on(self, msgs: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(msgs)


def build(store, instance_id=None):
    start, left, right, silent, join = (
        Start(id="start"),
        Half(id="left"),
        Half(id="right"),
        Silent(id="silent"),
        Join(id="join"),
    )
    return (
        WorkflowBuilder(name="rr", start_executor=start)
        .add_fan_out_edges(start, [left, right, silent])
        .add_fan_in_edges([left, silent], join)
        .build(store=store, instance_id=instance_id)
    )


async def test_restore_writes_a_copy_parented_by_the_restored_checkpoint(store):
    wf = build(store)
    await wf.run("one")
    target = await latest(wf)
    await wf.run("two")
    assert (await latest(wf)).shared_state["input"] == "two"

    copy_id = await wf.restore(target.checkpoint_id)
    copy = await store.load_checkpoint(copy_id)
    assert (await latest(wf)).checkpoint_id == copy_id
    assert copy.previous_checkpoint_id == target.checkpoint_id
    assert copy.shared_state == target.shared_state
    assert copy.executor_states == target.executor_states
    assert copy.fan_in_buffers == target.fan_in_buffers
    assert copy.messages == target.messages
    assert copy.superstep == target.superstep
    assert copy.checkpoint_id != target.checkpoint_id
    assert wf.status == RunState.IDLE

    await wf.run("three")
    cps = await checkpoints(wf)
    zero = next(cp for cp in cps if cp.superstep == 0)
    assert zero.previous_checkpoint_id == copy_id
    assert cps[0].executor_states["start"] == 2  # counted from the restored state (1), not from run two (2)


async def test_restore_with_queued_messages_then_run_continues(store):
    wf = build(store)
    await wf.run("one")
    after_first = next(cp for cp in await checkpoints(wf) if cp.superstep == 1)
    await wf.restore(after_first.checkpoint_id)
    assert queued(await latest(wf)) == [("left", "one"), ("right", "one"), ("silent", "one")]
    result = await wf.run()
    assert result.outputs == []  # silent never sends, so the join does not fire
    cp = await latest(wf)
    assert cp.messages == []
    assert after_first.fan_in_buffers == {}
    assert cp.fan_in_buffers == {"join": {"left": ["left:one"]}}  # not doubled by the first run's buffer


async def test_restore_brings_back_the_pending_requests_and_they_can_be_answered(store):
    wf = build(store, instance_id="asks")
    paused = await wf.run("ask")
    asked = {"left-ask", "right-ask"}
    assert set(paused.pending_requests) == asked
    paused_id = paused.checkpoint_id
    await wf.run(responses={"left-ask": "yes", "right-ask": "no"})
    assert await wf.pending_requests() == {}

    copy_id = await wf.restore(paused_id)
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert set(await wf.pending_requests()) == asked
    assert set((await store.load_checkpoint(copy_id)).pending_requests) == asked
    assert set(await build(store, instance_id="asks").pending_requests()) == asked  # a fresh handle too
    answered = await wf.run(responses={"left-ask": "again"})
    assert answered.outputs == ["again"]
    assert set(answered.pending_requests) == {"right-ask"}


async def test_restore_refused_while_reserved(store):
    wf = build(store)
    await wf.run("one")
    cp_id = (await latest(wf)).checkpoint_id
    call = wf.run("two")
    with pytest.raises(WorkflowRunInProgressError):
        await wf.restore(cp_id)
    await call


async def test_reset_for_new_run_clears_everything_and_starts_a_new_lineage(store):
    wf = build(store)
    await wf.run("ask-1")
    before = await latest(wf)
    # state to clear: shared, executor states, a fan-in buffer (right never joins), pending requests
    assert before.shared_state == {"input": "ask-1", "silent": True}
    assert set(before.executor_states) == {"start", "left", "right"}
    assert before.fan_in_buffers == {"join": {"left": ["left:ask-1"]}}  # silent never sends
    assert set(before.pending_requests) == {"left-ask-1", "right-ask-1"}
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS

    reset_id = await wf.reset_for_new_run()
    assert sorted(RESETS) == ["left", "right", "start"]
    cp = await store.load_checkpoint(reset_id)
    assert (await latest(wf)).checkpoint_id == reset_id
    assert cp.previous_checkpoint_id is None
    assert cp.messages == [] and cp.shared_state == {} and cp.executor_states == {}
    assert cp.fan_in_buffers == {} and cp.pending_requests == {}
    assert cp.superstep == 0
    assert wf.status == RunState.IDLE

    result = await wf.run("plain")
    zero = next(c for c in await checkpoints(wf) if c.superstep == 0 and c.run_id == result.run_id)
    assert zero.previous_checkpoint_id == reset_id
    assert (await latest(wf)).executor_states["start"] == 1


async def test_reset_clears_fan_in_buffers_and_queued_messages(store):
    class Loop(Executor):
        @handler
        async def on(self, msg: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(msg)

    start, left, right, silent, join = (
        Start(id="start"),
        Half(id="left"),
        Half(id="right"),
        Silent(id="silent"),
        Join(id="join"),
    )
    loop = Loop(id="loop")
    wf = (
        WorkflowBuilder(start_executor=start, max_supersteps=3)
        .add_fan_out_edges(start, [left, right, silent])
        .add_fan_in_edges([left, silent], join)
        .add_edge(right, loop)
        .add_edge(loop, loop)
        .build(store=store)
    )
    with pytest.raises(ConvergenceError):
        await wf.run("x")
    before = await latest(wf)
    assert before.fan_in_buffers == {"join": {"left": ["left:x"]}}
    assert before.messages
    await wf.reset_for_new_run()
    cp = await latest(wf)
    assert cp.fan_in_buffers == {} and cp.messages == []
    assert wf.status == RunState.IDLE
    with pytest.raises(ValueError):
        await wf.run()


async def test_reset_hook_failure_changes_nothing(store):
    wf = build(store)
    await wf.run("ask-1")
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    status_before = wf.status
    BROKEN_RESET["on"] = True
    with pytest.raises(WorkflowError) as info:
        await wf.reset_for_new_run()
    assert "'right'" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value.__cause__) == "session already closed"
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    cp = await latest(wf)
    assert set(cp.pending_requests) == {"left-ask-1", "right-ask-1"}
    assert wf.status == status_before == RunState.IDLE_WITH_PENDING_REQUESTS
    # the instance is still usable: answer the pending request
    result = await wf.run(responses={"left-ask-1": "yes"})
    assert result.outputs == ["yes"]
    BROKEN_RESET["on"] = False
    await wf.reset_for_new_run()
    assert wf.status == RunState.IDLE


async def test_reset_before_first_run(store):
    wf = build(store)
    reset_id = await wf.reset_for_new_run()
    cp = await store.load_checkpoint(reset_id)
    assert cp.previous_checkpoint_id is None and cp.messages == []
    assert (await wf.run("x")).status == RunState.IDLE
