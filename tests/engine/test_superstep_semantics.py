"""BSP semantics: supersteps, delivery order, max_supersteps, dropped messages, conditions, targeted sends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from barrierflow.engine import (
    ConvergenceError,
    Executor,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
)

from .bf_helpers import checkpoints, latest, of_type, queued, types_of

LOG: list[object] = []


@pytest.fixture(autouse=True)
def _clear_log():
    LOG.clear()
    yield
    LOG.clear()


@dataclass
class Count:
    n: int


class Forward(Executor):
    """Records (id, superstep, msg) and forwards the message."""

    @handler
    async def on(self, msg: object, ctx: WorkflowContext) -> None:
        LOG.append((ctx.executor_id, ctx.superstep, msg))
        await ctx.send_message(msg)


class Sink(Executor):
    @handler
    async def on(self, msg: object, ctx: WorkflowContext) -> None:
        LOG.append((ctx.executor_id, ctx.superstep, msg))
        await ctx.yield_output((ctx.executor_id, msg))


class Burst(Executor):
    """Sends the numbers 1..n (n = the input)."""

    @handler
    async def on(self, n: int, ctx: WorkflowContext) -> None:
        for i in range(1, n + 1):
            await ctx.send_message(i)


class SlowSerial(Executor):
    """Awaits between start and end, so interleaved deliveries would show up in LOG."""

    @handler
    async def on(self, i: int, ctx: WorkflowContext) -> None:
        LOG.append(("start", i))
        await asyncio.sleep(0.002 * (6 - i))
        LOG.append(("end", i))
        await ctx.yield_output(i)


class Loop(Executor):
    """Counts up to 5, one superstep per step."""

    @handler
    async def on(self, c: Count, ctx: WorkflowContext) -> None:
        LOG.append((ctx.superstep, c.n))
        if c.n < 5:
            await ctx.send_message(Count(c.n + 1))
        else:
            await ctx.yield_output(c.n)


def chain3():
    a, b, c = Forward(id="a"), Forward(id="b"), Sink(id="c")
    return WorkflowBuilder(start_executor=a).add_chain([a, b, c])


async def test_message_sent_in_superstep_n_is_delivered_in_n_plus_1():
    wf = chain3().build()
    result = await wf.run("m")
    assert LOG == [("a", 1, "m"), ("b", 2, "m"), ("c", 3, "m")]
    assert result.outputs == [("c", "m")]
    started = [e.superstep for e in of_type(result.events, "superstep_started")]
    completed = [e.superstep for e in of_type(result.events, "superstep_completed")]
    assert started == completed == [1, 2, 3]


async def test_supersteps_count_from_zero_for_each_new_message_run():
    wf = chain3().build()
    await wf.run("first")
    LOG.clear()
    result = await wf.run("second")
    assert [entry[1] for entry in LOG] == [1, 2, 3]
    cps = await checkpoints(wf)
    # newest first: superstep 3, 2, 1, 0 of the second run, then those of the first run
    assert [cp.superstep for cp in cps] == [3, 2, 1, 0, 3, 2, 1, 0]
    zero = cps[3]
    assert queued(zero) == [("a", "second")]
    assert zero.run_id == result.run_id
    assert [e.superstep for e in of_type(result.events, "checkpoint_created")] == [0, 1, 2, 3]


async def test_per_source_edge_order_is_kept():
    burst, sink = Burst(id="burst"), Sink(id="sink")
    wf = WorkflowBuilder(start_executor=burst).add_edge(burst, sink).build()
    result = await wf.run(8)
    assert result.outputs == [("sink", i) for i in range(1, 9)]
    assert [entry[2] for entry in LOG] == list(range(1, 9))


async def test_one_executor_handles_its_deliveries_one_at_a_time():
    burst, slow = Burst(id="burst"), SlowSerial(id="slow")
    wf = WorkflowBuilder(start_executor=burst).add_edge(burst, slow).build()
    result = await wf.run(5)
    assert [entry for i in range(1, 6) for entry in (("start", i), ("end", i))] == LOG
    assert result.outputs == [1, 2, 3, 4, 5]


class SlowSender(Executor):
    """Sends two messages, after finishing last."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await asyncio.sleep(0.03)
        await ctx.send_message(f"{ctx.executor_id}-1")
        await ctx.send_message(f"{ctx.executor_id}-2")


class FastSender(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(f"{ctx.executor_id}-1")


async def test_delivery_order_is_a_total_order_fixed_by_senders_not_by_finish_order():
    start = Forward(id="start")
    slow, fast = SlowSender(id="slow"), FastSender(id="fast")
    sink = Sink(id="sink")
    wf = (
        WorkflowBuilder(start_executor=start)
        .add_fan_out_edges(start, [slow, fast])  # slow is delivered first
        .add_edge(slow, sink)
        .add_edge(fast, sink)
        .build()
    )
    result = await wf.run("go")
    assert [m for (eid, _, m) in LOG if eid == "sink"] == ["slow-1", "slow-2", "fast-1"]
    assert result.outputs == [("sink", "slow-1"), ("sink", "slow-2"), ("sink", "fast-1")]


async def test_fan_out_targets_delivered_in_listed_order():
    start = Forward(id="start")
    c, b, a = Sink(id="c"), Sink(id="b"), Sink(id="a")
    wf = WorkflowBuilder(start_executor=start).add_fan_out_edges(start, [c, b, a]).build()
    result = await wf.run("x")
    assert result.outputs == [("c", "x"), ("b", "x"), ("a", "x")]
    after_first = next(cp for cp in await checkpoints(wf) if cp.superstep == 1)
    assert queued(after_first) == [("c", "x"), ("b", "x"), ("a", "x")]


async def test_max_supersteps_raises_convergence_error_and_run_continues():
    loop = Loop(id="loop")
    wf = WorkflowBuilder(name="looping", start_executor=loop, max_supersteps=3).add_edge(loop, loop).build()
    with pytest.raises(ConvergenceError) as info:
        await wf.run(Count(0))
    assert "max_supersteps=3" in str(info.value)
    assert wf.status == RunState.FAILED
    assert LOG == [(1, 0), (2, 1), (3, 2)]
    cp = await latest(wf)
    assert cp.superstep == 3
    assert queued(cp) == [("loop", Count(3))]

    result = await wf.run()
    assert LOG[3:] == [(4, 3), (5, 4), (6, 5)]  # continuations keep counting
    assert result.outputs == [5]
    assert result.status == RunState.IDLE
    assert wf.status == RunState.IDLE
    assert (await latest(wf)).messages == []


async def test_convergence_error_events_in_stream():
    loop = Loop(id="loop")
    wf = WorkflowBuilder(start_executor=loop, max_supersteps=2).add_edge(loop, loop).build()
    stream = wf.stream(Count(0))
    seen = []
    with pytest.raises(ConvergenceError):
        async for event in stream:
            seen.append(event)
    assert types_of(seen)[-2:] == ["failed", "status"]
    assert seen[-1].data == RunState.FAILED
    assert seen[-2].details["error_type"] == "ConvergenceError"


async def test_finishing_exactly_at_max_supersteps_is_not_an_error():
    a, b, c = Forward(id="a"), Forward(id="b"), Sink(id="c")
    wf = WorkflowBuilder(start_executor=a, max_supersteps=3).add_chain([a, b, c]).build()
    result = await wf.run("m")
    assert result.outputs == [("c", "m")]
    assert result.status == RunState.IDLE


class MixedSender(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(1)
        await ctx.send_message("not an int")  # the only target takes int
        await ctx.send_message(2)


class IntSink(Executor):
    @handler
    async def on(self, msg: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output(msg)


class Lonely(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message("nowhere")
        await ctx.send_message("nowhere either")
        await ctx.yield_output("done")


async def test_message_no_edge_takes_is_dropped_with_a_counted_warning():
    wf = WorkflowBuilder(start_executor=Lonely(id="lonely")).build()
    result = await wf.run("x")
    assert result.outputs == ["done"]
    warnings = of_type(result.events, "warning")
    assert len(warnings) == 1
    assert warnings[0].details["dropped"] == 2
    assert "2" in str(warnings[0].data)
    assert warnings[0].superstep == 1
    assert result.status == RunState.IDLE


async def test_message_no_target_handles_is_dropped_with_a_counted_warning():
    sender, sink = MixedSender(id="sender"), IntSink(id="ints")
    wf = WorkflowBuilder(start_executor=sender).add_edge(sender, sink).build()
    result = await wf.run("x")
    assert result.outputs == [1, 2]
    warnings = of_type(result.events, "warning")
    assert [w.details["dropped"] for w in warnings] == [1]
    # the warning belongs to the superstep that routed the message, before it completes
    kinds = types_of(result.events)
    assert kinds.index("warning") < kinds.index("superstep_completed")


async def test_conditional_edges_sync_and_async():
    async def is_odd(n: int) -> bool:
        await asyncio.sleep(0)
        return n % 2 == 1

    burst, evens, odds = Burst(id="burst"), Sink(id="evens"), Sink(id="odds")
    wf = (
        WorkflowBuilder(start_executor=burst)
        .add_edge(burst, evens, condition=lambda n: n % 2 == 0)
        .add_edge(burst, odds, condition=is_odd)
        .build()
    )
    result = await wf.run(4)
    assert sorted(result.outputs) == sorted([("evens", 2), ("evens", 4), ("odds", 1), ("odds", 3)])
    assert [m for eid, _, m in LOG if eid == "evens"] == [2, 4]
    assert [m for eid, _, m in LOG if eid == "odds"] == [1, 3]


class Targeted(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message("only-c", target_id="c")
        await ctx.send_message("to-all")
        await ctx.send_message("to-nobody", target_id="zzz")


async def test_send_message_with_target_id():
    src, b, c = Targeted(id="src"), Sink(id="b"), Sink(id="c")
    wf = WorkflowBuilder(start_executor=src).add_fan_out_edges(src, [b, c]).build()
    result = await wf.run("go")
    # total order: the sender's messages in send order, each to its targets in the listed order
    assert result.outputs == [("c", "only-c"), ("b", "to-all"), ("c", "to-all")]
    assert [m for eid, _, m in LOG if eid == "b"] == ["to-all"]
    assert [m for eid, _, m in LOG if eid == "c"] == ["only-c", "to-all"]
    assert [w.details["dropped"] for w in of_type(result.events, "warning")] == [1]


@executor(id="stamp")
async def stamp(msg: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output((msg, ctx.superstep))


async def test_single_executor_workflow_uses_superstep_one():
    wf = WorkflowBuilder(start_executor=stamp).build()
    assert (await wf.run("a")).outputs == [("a", 1)]
    assert (await wf.run("b")).outputs == [("b", 1)]
