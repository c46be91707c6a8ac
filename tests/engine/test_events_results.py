"""Events and results: event types and their order, custom events, RunResult fields, to_mermaid()."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from barrierflow.engine import (
    Case,
    Default,
    Executor,
    ExecutorFailedError,
    RunResult,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowEvent,
    executor,
    handler,
    register_type,
)

from .bf_helpers import checkpoints, latest, of_type, types_of


@register_type  # events are encoded at the barrier, in process as on a worker
@dataclass
class Progress:
    pct: int


class Upper(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.add_event(WorkflowEvent("progress", Progress(50)))
        await ctx.send_message(text.upper())


@executor(id="reverse")
async def reverse(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(text[::-1])


def build(store=None):
    upper = Upper(id="upper")
    return WorkflowBuilder(name="demo", start_executor=upper).add_edge(upper, reverse).build(store=store)


async def test_exact_event_sequence_of_a_two_step_run(store):
    wf = build(store)
    stream = wf.stream("abc")
    events = [event async for event in stream]
    assert [(e.type, e.superstep) for e in events] == [
        ("started", None),
        ("status", None),
        ("checkpoint_created", 0),
        ("superstep_started", 1),
        ("executor_invoked", 1),
        ("executor_completed", 1),
        ("progress", 1),
        ("checkpoint_created", 1),
        ("superstep_completed", 1),
        ("superstep_started", 2),
        ("executor_invoked", 2),
        ("executor_completed", 2),
        ("output", 2),
        ("checkpoint_created", 2),
        ("superstep_completed", 2),
        ("status", None),
    ]
    assert [e.data for e in of_type(events, "status")] == [RunState.IN_PROGRESS, RunState.IDLE]
    assert [e.executor_id for e in events if e.type.startswith("executor_")] == [
        "upper",
        "upper",
        "reverse",
        "reverse",
    ]
    (custom,) = of_type(events, "progress")
    assert custom.data == Progress(50)
    assert custom.executor_id == "upper"
    (output,) = of_type(events, "output")
    assert (output.data, output.executor_id) == ("CBA", "reverse")

    result = await stream.result()
    assert result.events == events
    assert result.outputs == ["CBA"]


async def test_barrier_order_commit_checkpoint_then_superstep_completed(store):
    wf = build(store)
    result = await wf.run("x")
    kinds = types_of(result.events)
    for step in (1, 2):
        idx = {e.type: i for i, e in enumerate(result.events) if e.superstep == step}
        assert idx["superstep_started"] < idx["executor_invoked"] < idx["executor_completed"]
        assert idx["executor_completed"] < idx["checkpoint_created"] < idx["superstep_completed"]
    assert kinds.index("output") < kinds.index("superstep_completed", kinds.index("output"))
    # every checkpoint_created event matches a stored checkpoint
    stored = {cp.checkpoint_id for cp in await checkpoints(wf)}
    assert len(of_type(result.events, "checkpoint_created")) == len(stored) == 3


async def test_run_result_fields(store):
    wf = build(store)
    result = await wf.run("hello")
    assert isinstance(result, RunResult)
    assert result.outputs == ["OLLEH"]
    assert result.status == RunState.IDLE
    assert result.pending_requests == {}
    cp = await latest(wf)
    assert result.checkpoint_id == cp.checkpoint_id
    assert result.run_id == cp.run_id
    assert isinstance(result.events, list) and all(isinstance(e, WorkflowEvent) for e in result.events)
    second = await wf.run("again")
    assert second.run_id != result.run_id


class Everything(Executor):
    """Produces a request, a dropped message, a custom event and an output in one superstep."""

    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        if msg == "fail":
            raise RuntimeError("asked to fail")
        await ctx.yield_output("out")
        await ctx.add_event(WorkflowEvent("custom", {"k": 1}))
        await ctx.send_message(42)  # no edge: dropped
        await ctx.request_info("question?", str, request_id="rq")


async def test_every_builtin_event_type_appears(store):
    wf = WorkflowBuilder(start_executor=Everything(id="everything")).build(store=store)
    result = await wf.run("go")
    kinds = set(types_of(result.events))
    assert {
        "started",
        "status",
        "superstep_started",
        "superstep_completed",
        "executor_invoked",
        "executor_completed",
        "output",
        "request_info",
        "checkpoint_created",
        "warning",
        "custom",
    } <= kinds
    assert result.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert result.pending_requests["rq"].data == "question?"
    assert result.pending_requests["rq"].request_id == "rq"
    assert of_type(result.events, "status")[-1].data == RunState.IDLE_WITH_PENDING_REQUESTS

    await wf.reset_for_new_run()
    stream = wf.stream("fail")
    seen = []
    with pytest.raises(ExecutorFailedError):
        async for event in stream:
            seen.append(event)
    assert {"executor_failed", "failed"} <= set(types_of(seen))
    (failed,) = of_type(seen, "failed")
    assert failed.executor_id == "everything"
    assert "asked to fail" in str(failed.data)


async def test_output_events_follow_delivery_order():
    class Src(Executor):
        @handler
        async def on(self, msg: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(msg)

    class Out(Executor):
        @handler
        async def on(self, msg: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(f"{ctx.executor_id}-1")
            await ctx.yield_output(f"{ctx.executor_id}-2")

    src, a, b = Src(id="src"), Out(id="a"), Out(id="b")
    wf = WorkflowBuilder(start_executor=src).add_fan_out_edges(src, [b, a]).build()
    result = await wf.run("x")
    assert result.outputs == ["b-1", "b-2", "a-1", "a-2"]


def test_to_mermaid_mentions_every_executor():
    src, a, b, c, join = (
        Upper(id="src"),
        Upper(id="alpha"),
        Upper(id="beta"),
        Upper(id="gamma"),
        Upper(id="join_x"),
    )

    class Joiner(Executor):
        @handler
        async def on(self, msgs: list[str], ctx: WorkflowContext) -> None: ...

    join = Joiner(id="join_x")
    wf = (
        WorkflowBuilder(name="m", start_executor=src)
        .add_switch_case_edge_group(src, [Case(condition=lambda m: m == "a", target=a), Default(target=b)])
        .add_edge(a, c, condition=lambda m: True)
        .add_fan_out_edges(b, [c, reverse])
        .add_fan_in_edges([c, reverse], join)
        .build()
    )
    text = wf.to_mermaid()
    assert isinstance(text, str) and text.strip()
    for eid in ("src", "alpha", "beta", "gamma", "reverse", "join_x"):
        assert eid in text


def test_introspection():
    wf = build()
    assert wf.name == "demo"
    assert isinstance(wf.instance_id, str) and wf.instance_id
    assert isinstance(wf.graph_signature, str) and wf.graph_signature
    assert build().graph_signature == wf.graph_signature  # same graph, same signature
    assert build().instance_id != wf.instance_id  # build() without instance_id makes a new instance
    assert wf.status == RunState.IDLE


class _Gated(Executor):
    """Waits for a gate that only the stream's consumer opens."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__("gated")
        self.gate = gate

    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        await self.gate.wait()
        await ctx.yield_output(text)


async def test_executor_events_reach_a_stream_while_the_handler_is_still_running():
    gate = asyncio.Event()
    wf = WorkflowBuilder(name="gated", start_executor=_Gated(gate)).build()
    seen: list[str] = []
    async with asyncio.timeout(5):  # without live events this would wait for the gate forever
        async for event in wf.stream("x"):
            seen.append(event.type)
            if event.type == "executor_invoked":
                assert "executor_completed" not in seen
                gate.set()  # only now can the handler finish
    assert seen.index("executor_invoked") < seen.index("executor_completed") < seen.index("output")
