"""Human in the loop: request_info, @response_handler, run(responses=...), pending status, refusals."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from barrierflow.engine import (
    Executor,
    RunState,
    UnknownRequestError,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowError,
    handler,
    response_handler,
)

from .bf_helpers import checkpoints, latest, of_type, types_of


@dataclass
class Approval:
    item: str
    amount: int


@dataclass
class Decision:
    approved: bool
    note: str = ""


class Approver(Executor):
    """Asks for one approval per item of its input, then forwards each decision."""

    @handler
    async def on(self, items: list, ctx: WorkflowContext) -> None:
        for item, amount in items:
            await ctx.request_info(Approval(item, amount), Decision, request_id=f"req-{item}")

    @response_handler
    async def on_decision(self, original: Approval, decision: Decision, ctx: WorkflowContext) -> None:
        ctx.set_state(original.item, decision.approved)
        await ctx.send_message((original.item, decision.approved, ctx.superstep))


class Recorder(Executor):
    @handler
    async def on(self, msg: tuple, ctx: WorkflowContext) -> None:
        await ctx.yield_output(msg)


class AutoId(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        rid = await ctx.request_info(msg, str)
        ctx.set_executor_state(rid)

    @response_handler
    async def answer(self, original: str, answer: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{original}->{answer}")


def build(store=None, instance_id=None):
    approver, recorder = Approver(id="approver"), Recorder(id="recorder")
    return (
        WorkflowBuilder(name="hitl", start_executor=approver)
        .add_edge(approver, recorder)
        .build(store=store, instance_id=instance_id)
    )


async def test_request_and_response_round_trip(store):
    wf = build(store)
    result = await wf.run([("laptop", 1200)])
    assert result.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert result.outputs == []
    assert list(result.pending_requests) == ["req-laptop"]
    event = result.pending_requests["req-laptop"]
    assert event.type == "request_info"
    assert event.data == Approval("laptop", 1200)
    assert event.request_id == "req-laptop"
    assert event.executor_id == "approver"
    assert of_type(result.events, "request_info") == [event]
    cp = await latest(wf)
    assert cp.messages == []
    assert list(cp.pending_requests) == ["req-laptop"]

    answered = await wf.run(responses={"req-laptop": Decision(True, "ok")})
    # continuations keep counting: the answer is delivered in superstep 2, its message in 3
    assert answered.outputs == [("laptop", True, 2)]
    assert answered.status == RunState.IDLE
    assert answered.pending_requests == {}
    assert wf.status == RunState.IDLE
    final = await latest(wf)
    assert final.pending_requests == {} and final.shared_state == {"laptop": True}


async def test_answering_one_of_two_leaves_it_pending(store):
    wf = build(store)
    result = await wf.run([("a", 1), ("b", 2)])
    assert set(result.pending_requests) == {"req-a", "req-b"}
    partial = await wf.run(responses={"req-b": Decision(False)})
    assert partial.outputs == [("b", False, 2)]
    assert partial.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert list(partial.pending_requests) == ["req-a"]
    assert partial.pending_requests["req-a"].data == Approval("a", 1)
    assert list((await latest(wf)).pending_requests) == ["req-a"]

    rest = await wf.run(responses={"req-a": Decision(True)})
    assert rest.outputs == [("a", True, 4)]
    assert rest.status == RunState.IDLE


async def test_answering_both_at_once(store):
    wf = build(store)
    await wf.run([("a", 1), ("b", 2)])
    result = await wf.run(responses={"req-a": Decision(True), "req-b": Decision(False)})
    assert sorted(result.outputs) == [("a", True, 2), ("b", False, 2)]
    assert result.status == RunState.IDLE


async def test_unknown_request_id_refused_before_anything_runs(store):
    wf = build(store)
    await wf.run([("a", 1)])
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(UnknownRequestError) as info:
        await wf.run(responses={"req-nope": Decision(True)})
    assert isinstance(info.value, WorkflowError)
    assert "req-nope" in str(info.value)
    stream = wf.stream(responses={"req-a": Decision(True), "req-nope": Decision(True)})
    seen = []
    with pytest.raises(UnknownRequestError):
        async for event in stream:
            seen.append(event)
    assert seen == []  # no events at all
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert list((await latest(wf)).pending_requests) == ["req-a"]


async def test_wrongly_typed_answer_refused_before_anything_runs(store):
    wf = build(store)
    await wf.run([("a", 1), ("b", 2)])
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(TypeError) as info:
        await wf.run(responses={"req-a": Decision(True), "req-b": "yes please"})
    assert "req-b" in str(info.value)
    assert "Decision" in str(info.value)
    seen = []
    with pytest.raises(TypeError):
        async for event in wf.stream(responses={"req-a": True}):
            seen.append(event)
    assert seen == []
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    assert set((await latest(wf)).pending_requests) == {"req-a", "req-b"}
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS
    # nothing was answered: both can still be answered
    result = await wf.run(responses={"req-a": Decision(True), "req-b": Decision(True)})
    assert result.status == RunState.IDLE


async def test_generated_request_id_and_response_handler(store):
    wf = WorkflowBuilder(start_executor=AutoId(id="auto")).build(store=store)
    result = await wf.run("question")
    (rid,) = result.pending_requests
    assert (await latest(wf)).executor_states == {"auto": rid}
    assert result.pending_requests[rid].data == "question"
    answered = await wf.run(responses={rid: "answer"})
    assert answered.outputs == ["question->answer"]


async def test_another_handle_answers_the_persisted_request(store):
    wf = build(store, instance_id="hitl-shared")
    await wf.run([("x", 5)])
    other = build(store, instance_id="hitl-shared")
    result = await other.run(responses={"req-x": Decision(True)})
    assert result.outputs == [("x", True, 2)]
    assert result.status == RunState.IDLE


async def test_response_run_event_sequence(store):
    wf = build(store)
    await wf.run([("a", 1)])
    result = await wf.run(responses={"req-a": Decision(True)})
    kinds = types_of(result.events, ignore=("executor_invoked", "executor_completed"))
    assert kinds == [
        "started",
        "status",
        "checkpoint_created",  # the answer queued
        "superstep_started",
        "checkpoint_created",
        "superstep_completed",
        "superstep_started",
        "output",
        "checkpoint_created",
        "superstep_completed",
        "status",
    ]


async def test_run_without_responses_while_only_requests_pend_is_a_value_error(store):
    wf = build(store)
    await wf.run([("a", 1)])
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(ValueError):
        await wf.run()
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS


async def test_new_message_while_requests_pend_keeps_them_pending(store):
    wf = build(store)
    await wf.run([("a", 1)])
    result = await wf.run([("b", 2)])
    assert set(result.pending_requests) == {"req-a", "req-b"}
    assert result.pending_requests["req-a"].data == Approval("a", 1)
    assert result.status == RunState.IDLE_WITH_PENDING_REQUESTS
    done = await wf.run(responses={"req-a": Decision(True), "req-b": Decision(True)})
    assert done.status == RunState.IDLE
