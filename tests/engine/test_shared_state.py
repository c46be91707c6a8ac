"""Shared state and executor state: read views, barrier merge in delivery order, persistence."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from barrierflow.engine import Executor, WorkflowBuilder, WorkflowContext, handler

from .bf_helpers import checkpoints, latest

READS: list[Any] = []


@pytest.fixture(autouse=True)
def _clear():
    READS.clear()
    yield
    READS.clear()


class Seed(Executor):
    """Superstep 1: writes the shared state given as a dict, then fans out."""

    @handler
    async def on(self, msg: dict, ctx: WorkflowContext) -> None:
        for key, value in msg.items():
            ctx.set_state(key, value)
        READS.append(("seed", ctx.get_state("k")))  # own write visible at once
        await ctx.send_message("go")


class Writer(Executor):
    """Reads k, writes k = its id, reads k again (own write), no await in between."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        before = ctx.get_state("k")
        ctx.set_state("k", ctx.executor_id)
        ctx.set_state(f"only-{ctx.executor_id}", True)
        READS.append((ctx.executor_id, before, ctx.get_state("k")))
        await ctx.send_message("written")


class LateReader(Executor):
    """Runs after Writer has written (sleeps first): must still see the last barrier's value."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await asyncio.sleep(0.02)
        READS.append((ctx.executor_id, ctx.get_state("k"), ctx.get_state("only-writer", "absent")))


class Reader(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        READS.append((ctx.executor_id, ctx.get_state("k"), ctx.get_state("missing", "dflt")))


async def test_reads_see_last_barrier_plus_own_writes_but_not_siblings(store):
    seed, writer, late = Seed(id="seed"), Writer(id="writer"), LateReader(id="late")
    wf = WorkflowBuilder(start_executor=seed).add_fan_out_edges(seed, [writer, late]).build(store=store)
    await wf.run({"k": "initial"})
    assert ("seed", "initial") in READS
    assert ("writer", "initial", "writer") in READS
    assert ("late", "initial", "absent") in READS  # the sibling's same-superstep writes are invisible
    cp = await latest(wf)
    assert cp.shared_state == {"k": "writer", "only-writer": True}


async def test_next_superstep_sees_the_committed_state():
    seed, writer, reader = Seed(id="seed"), Writer(id="writer"), Reader(id="reader")
    wf = WorkflowBuilder(start_executor=seed).add_chain([seed, writer, reader]).build()
    await wf.run({"k": 0})
    assert READS[-1] == ("reader", "writer", "dflt")


class SlowSetter(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await asyncio.sleep(0.03)
        ctx.set_state("w", ctx.executor_id)
        ctx.set_state("slow-only", 1)
        READS.append(("finished", ctx.executor_id))


class FastSetter(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("w", ctx.executor_id)
        READS.append(("finished", ctx.executor_id))


async def test_writes_merge_in_delivery_order_not_finish_order(store):
    seed, slow, fast = Seed(id="seed"), SlowSetter(id="slow"), FastSetter(id="fast")
    # fast is delivered first but finishes first too; slow is delivered second and finishes last -> slow wins
    wf1 = WorkflowBuilder(start_executor=seed).add_fan_out_edges(seed, [fast, slow]).build(store=store)
    await wf1.run({})
    assert (await latest(wf1)).shared_state == {"w": "slow", "slow-only": 1}

    READS.clear()
    seed, slow, fast = Seed(id="seed"), SlowSetter(id="slow"), FastSetter(id="fast")
    # slow is delivered first and finishes last; fast, delivered later, still wins
    wf2 = WorkflowBuilder(start_executor=seed).add_fan_out_edges(seed, [slow, fast]).build(store=store)
    await wf2.run({})
    assert [r for r in READS if r[0] == "finished"] == [("finished", "fast"), ("finished", "slow")]
    assert (await latest(wf2)).shared_state == {"w": "fast", "slow-only": 1}


class Dealer(Executor):
    """Deals its messages alternately to ``a`` and ``b``: delivery order a0, b1, a2, b3."""

    @handler
    async def on(self, msg: dict, ctx: WorkflowContext) -> None:
        for i in range(4):
            await ctx.send_message(i, target_id="ab"[i % 2])


class Tagger(Executor):
    """Writes the shared key ``w`` and sends its tag on; the first delivery of ``a`` is slow."""

    @handler
    async def on(self, i: int, ctx: WorkflowContext) -> None:
        if i == 0:
            await asyncio.sleep(0.03)  # a0 finishes after b1 and b3 have run
        tag = f"{ctx.executor_id}{i}"
        ctx.set_state("w", tag)
        READS.append(("finished", tag))
        await ctx.send_message(tag)


class Collect(Executor):
    @handler
    async def on(self, tag: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(tag)


async def test_several_deliveries_per_executor_merge_and_route_in_delivery_order(store):
    """Outcomes of a superstep arrive executor by executor (a0 a2 come after b1 b3 here); the barrier must
    still merge writes and route sends in the total delivery order a0, b1, a2, b3."""
    dealer, a, b, sink = Dealer(id="dealer"), Tagger(id="a"), Tagger(id="b"), Collect(id="sink")
    wf = (
        WorkflowBuilder(start_executor=dealer)
        .add_edge(dealer, a)
        .add_edge(dealer, b)
        .add_edge(a, sink)
        .add_edge(b, sink)
        .build(store=store)
    )
    result = await wf.run({})
    assert [r[1] for r in READS if r[0] == "finished"] == ["b1", "b3", "a0", "a2"]  # the finish order
    assert result.outputs == ["a0", "b1", "a2", "b3"]  # routed in delivery order
    assert next(cp for cp in await checkpoints(wf) if cp.superstep == 2).shared_state == {"w": "b3"}


class Deleter(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.delete_state("k")
        READS.append((ctx.executor_id, ctx.get_state("k", "gone")))
        await ctx.send_message("next")


async def test_delete_state(store):
    seed, deleter, late = Seed(id="seed"), Deleter(id="deleter"), LateReader(id="late")
    reader = Reader(id="reader")
    wf = (
        WorkflowBuilder(start_executor=seed)
        .add_fan_out_edges(seed, [deleter, late])
        .add_edge(deleter, reader)
        .build(store=store)
    )
    await wf.run({"k": "v", "keep": 1})
    assert ("deleter", "gone") in READS
    assert ("late", "v", "absent") in READS  # sibling still sees the barrier's value
    assert ("reader", None, "dflt") in READS  # after the barrier the key is gone
    assert (await latest(wf)).shared_state == {"keep": 1}


async def test_delete_then_later_delivered_set_wins():
    seed, deleter, writer = Seed(id="seed"), Deleter(id="deleter"), Writer(id="writer")
    wf = WorkflowBuilder(start_executor=seed).add_fan_out_edges(seed, [deleter, writer]).build()
    await wf.run({"k": "v"})
    assert (await latest(wf)).shared_state == {"k": "writer", "only-writer": True}

    seed, deleter, writer = Seed(id="seed"), Deleter(id="deleter"), Writer(id="writer")
    wf = WorkflowBuilder(start_executor=seed).add_fan_out_edges(seed, [writer, deleter]).build()
    await wf.run({"k": "v"})
    assert (await latest(wf)).shared_state == {"only-writer": True}


class Counter(Executor):
    """Counts its deliveries in its executor state; reads its own earlier writes within a superstep."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        state = ctx.get_executor_state({"count": 0})
        new = {"count": state["count"] + 1, "last": msg}
        ctx.set_executor_state(new)
        READS.append((ctx.superstep, ctx.get_executor_state()["count"]))
        await ctx.send_message(msg)


class Burst(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        for i in range(3):
            await ctx.send_message(f"{msg}{i}")


class Quiet(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output((msg, ctx.get_executor_state("unset")))


async def test_executor_state_persists_across_supersteps_runs_and_checkpoints(store):
    burst, counter, quiet = Burst(id="burst"), Counter(id="counter"), Quiet(id="quiet")
    wf = WorkflowBuilder(start_executor=burst).add_chain([burst, counter, quiet]).build(store=store)
    result = await wf.run("a")
    assert READS == [(2, 1), (2, 2), (2, 3)]  # one superstep, own writes visible between deliveries
    assert result.outputs == [("a0", "unset"), ("a1", "unset"), ("a2", "unset")]  # others' state is private
    cp = await latest(wf)
    assert cp.executor_states == {"counter": {"count": 3, "last": "a2"}}

    READS.clear()
    await wf.run("b")
    assert READS == [(2, 4), (2, 5), (2, 6)]
    by_step = [cp for cp in await checkpoints(wf)]
    assert by_step[0].executor_states == {"counter": {"count": 6, "last": "b2"}}
    # the second run's superstep-0 checkpoint still holds the first run's final state
    zero = next(cp for cp in by_step if cp.superstep == 0)
    assert zero.executor_states == {"counter": {"count": 3, "last": "a2"}}

    # a fresh handle on the same instance continues with the persisted executor state
    burst, counter, quiet = Burst(id="burst"), Counter(id="counter"), Quiet(id="quiet")
    other = (
        WorkflowBuilder(start_executor=burst)
        .add_chain([burst, counter, quiet])
        .build(instance_id=wf.instance_id, store=store)
    )
    READS.clear()
    await other.run("c")
    assert READS == [(2, 7), (2, 8), (2, 9)]


async def test_shared_state_persists_across_runs():
    class Acc(Executor):
        @handler
        async def on(self, msg: int, ctx: WorkflowContext) -> None:
            total = ctx.get_state("total", 0) + msg
            ctx.set_state("total", total)
            await ctx.yield_output(total)

    wf = WorkflowBuilder(start_executor=Acc(id="acc")).build()
    assert (await wf.run(2)).outputs == [2]
    assert (await wf.run(5)).outputs == [7]
    assert (await latest(wf)).shared_state == {"total": 7}
