"""Fan-out, fan-in (list order, firing rule, checkpointed buffer) and switch/case routing."""

from __future__ import annotations

import asyncio

from barrierflow.engine import Case, Default, Executor, RunState, WorkflowBuilder, WorkflowContext, handler

from .bf_helpers import checkpoints, latest, queued


class Start(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(msg)


class SlowTwo(Executor):
    """Finishes last, sends two messages."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await asyncio.sleep(0.03)
        await ctx.send_message(f"{ctx.executor_id}:{msg}:1")
        await ctx.send_message(f"{ctx.executor_id}:{msg}:2")


class FastOne(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(f"{ctx.executor_id}:{msg}")


class Maybe(Executor):
    """Sends only when the message does not start with 'skip'."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        if not msg.startswith("skip"):
            await ctx.send_message(f"{ctx.executor_id}:{msg}")


class Join(Executor):
    @handler
    async def on(self, msgs: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output((ctx.superstep, msgs, list(ctx.source_executor_ids)))


async def test_fan_in_list_is_first_source_then_second_regardless_of_finish_order():
    start, slow, fast, join = Start(id="start"), SlowTwo(id="slow"), FastOne(id="fast"), Join(id="join")
    wf = (
        WorkflowBuilder(start_executor=start)
        .add_fan_out_edges(start, [fast, slow])
        .add_fan_in_edges([slow, fast], join)
        .build()
    )
    result = await wf.run("m")
    assert [out[1] for out in result.outputs] == [["slow:m:1", "slow:m:2", "fast:m"]]
    assert result.outputs[0][0] == 3


async def test_fan_in_fires_only_when_all_sources_sent_and_buffer_persists_across_runs(store):
    start, maybe, fast, join = Start(id="start"), Maybe(id="maybe"), FastOne(id="fast"), Join(id="join")
    wf = (
        WorkflowBuilder(start_executor=start)
        .add_fan_out_edges(start, [maybe, fast])
        .add_fan_in_edges([maybe, fast], join)
        .build(store=store)
    )
    result = await wf.run("skip-1")
    assert result.outputs == []
    assert result.status == RunState.IDLE
    cp = await latest(wf)
    assert cp.fan_in_buffers == {"join": {"fast": ["fast:skip-1"]}}
    assert cp.messages == []

    result = await wf.run("go")
    assert [out[1] for out in result.outputs] == [["maybe:go", "fast:skip-1", "fast:go"]]
    assert (await latest(wf)).fan_in_buffers == {}


class Relay(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(f"{ctx.executor_id}:{msg}")


async def test_fan_in_buffer_is_in_the_checkpoint_between_supersteps(store):
    start, quick, hop1, hop2, join = (
        Start(id="start"),
        FastOne(id="quick"),
        Relay(id="hop1"),
        Relay(id="hop2"),
        Join(id="join"),
    )
    wf = (
        WorkflowBuilder(start_executor=start)
        .add_fan_out_edges(start, [quick, hop1])
        .add_edge(hop1, hop2)
        .add_fan_in_edges([hop2, quick], join)
        .build(store=store)
    )
    result = await wf.run("m")
    assert result.outputs == [(4, ["hop2:hop1:m", "quick:m"], ["hop2", "quick"])]
    by_step = {cp.superstep: cp for cp in await checkpoints(wf)}
    assert by_step[1].fan_in_buffers == {}
    assert by_step[2].fan_in_buffers == {"join": {"quick": ["quick:m"]}}
    assert queued(by_step[2]) == [("hop2", "hop1:m")]
    assert by_step[3].fan_in_buffers == {}
    assert queued(by_step[3]) == [("join", ["hop2:hop1:m", "quick:m"])]
    assert by_step[4].fan_in_buffers == {} and by_step[4].messages == []


async def test_fan_out_broadcasts_every_message():
    class Two(Executor):
        @handler
        async def on(self, msg: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(msg + "1")
            await ctx.send_message(msg + "2")

    class Out(Executor):
        @handler
        async def on(self, msg: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output((ctx.executor_id, msg))

    src, a, b = Two(id="src"), Out(id="a"), Out(id="b")
    wf = WorkflowBuilder(start_executor=src).add_fan_out_edges(src, [a, b]).build()
    result = await wf.run("m")
    assert result.outputs == [("a", "m1"), ("b", "m1"), ("a", "m2"), ("b", "m2")]


class Numbers(Executor):
    @handler
    async def on(self, msg: list, ctx: WorkflowContext) -> None:
        for n in msg:
            await ctx.send_message(n)


class Tag(Executor):
    @handler
    async def on(self, n: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output((ctx.executor_id, n))


async def test_switch_takes_first_matching_case_else_default():
    async def is_small(n: int) -> bool:
        return n < 10

    src = Numbers(id="src")
    neg, small, medium, big = Tag(id="neg"), Tag(id="small"), Tag(id="medium"), Tag(id="big")
    wf = (
        WorkflowBuilder(start_executor=src)
        .add_switch_case_edge_group(
            src,
            [
                Case(condition=lambda n: n < 0, target=neg),
                Case(condition=is_small, target=small),  # async condition; also true for negatives
                Case(condition=lambda n: n < 100, target=medium),
                Default(target=big),
            ],
        )
        .build()
    )
    result = await wf.run([-5, 3, 50, 500, 9])
    assert result.outputs == [("neg", -5), ("small", 3), ("medium", 50), ("big", 500), ("small", 9)]


async def test_switch_can_route_to_the_same_target_twice():
    src, yes, other = Numbers(id="src"), Tag(id="yes"), Tag(id="other")
    wf = (
        WorkflowBuilder(start_executor=src)
        .add_switch_case_edge_group(
            src,
            [
                Case(condition=lambda n: n == 1, target=yes),
                Case(condition=lambda n: n == 2, target=yes),
                Default(target=other),
            ],
        )
        .build()
    )
    result = await wf.run([1, 2, 3])
    assert result.outputs == [("yes", 1), ("yes", 2), ("other", 3)]
