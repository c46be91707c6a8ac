"""Checkpoints: automatic ones with lineage, create_checkpoint(), run(checkpoint_id=...), resuming handles."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from barrierflow.engine import (
    Checkpoint,
    CheckpointNotFoundError,
    ConvergenceError,
    Executor,
    ExecutorFailedError,
    GraphSignatureMismatchError,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowNotIdleError,
    handler,
    response_handler,
)

from .bf_helpers import assert_lineage, checkpoints, latest, queued

FLAGS = {"fail": False}


@pytest.fixture(autouse=True)
def _flags():
    FLAGS["fail"] = False
    yield
    FLAGS["fail"] = False


@dataclass
class Question:
    text: str


class Step(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state(ctx.executor_id, msg)
        ctx.set_executor_state(len(msg))
        if FLAGS["fail"] and ctx.executor_id == "b":
            raise RuntimeError("b is broken")
        await ctx.send_message(msg + "+")


class End(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(msg)


class Asker(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.request_info(Question(msg), str, request_id=f"q-{msg}")

    @response_handler
    async def on_answer(self, original: Question, answer: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{original.text}={answer}")


def chain(store, instance_id=None):
    a, b, end = Step(id="a"), Step(id="b"), End(id="end")
    return (
        WorkflowBuilder(name="ck", start_executor=a)
        .add_chain([a, b, end])
        .build(store=store, instance_id=instance_id)
    )


def asker(store, instance_id=None):
    return WorkflowBuilder(name="ask", start_executor=Asker(id="asker")).build(
        store=store, instance_id=instance_id
    )


async def test_checkpoint_at_entry_and_after_every_superstep_with_lineage(store):
    wf = chain(store)
    result = await wf.run("m")
    cps = await checkpoints(wf)
    assert [cp.superstep for cp in cps] == [3, 2, 1, 0]
    assert cps[-1].previous_checkpoint_id is None
    assert_lineage(cps)
    assert result.checkpoint_id == cps[0].checkpoint_id
    for cp in cps:
        assert isinstance(cp, Checkpoint)
        assert cp.instance_id == wf.instance_id
        assert cp.workflow_name == "ck"
        assert cp.graph_signature == wf.graph_signature
        assert cp.run_id == result.run_id
        assert cp.version >= 1
    assert queued(cps[3]) == [("a", "m")]
    assert queued(cps[2]) == [("b", "m+")]
    assert queued(cps[1]) == [("end", "m++")]
    assert cps[0].messages == []
    assert cps[1].shared_state == {"a": "m", "b": "m+"}
    assert cps[1].executor_states == {"a": 1, "b": 2}
    assert cps[0].created_at >= cps[3].created_at

    # a second run continues the lineage
    await wf.run("n")
    newer = await checkpoints(wf)
    assert len(newer) == 8
    assert newer[3].superstep == 0 and newer[3].previous_checkpoint_id == cps[0].checkpoint_id
    assert_lineage(newer)


async def test_load_checkpoint_round_trip(store):
    wf = chain(store)
    await wf.run("m")
    for cp in await checkpoints(wf):
        loaded = await store.load_checkpoint(cp.checkpoint_id)
        assert loaded == cp
    with pytest.raises(CheckpointNotFoundError):
        await store.load_checkpoint("no-such-checkpoint")


async def test_create_checkpoint_before_first_run_captures_initial_state_and_can_be_restored(store):
    wf = chain(store)
    initial = await wf.create_checkpoint(metadata={"label": "empty"})
    cp = await store.load_checkpoint(initial)
    assert cp.messages == [] and cp.shared_state == {} and cp.executor_states == {}
    assert cp.pending_requests == {} and cp.fan_in_buffers == {}
    assert cp.previous_checkpoint_id is None
    assert cp.metadata == {"label": "empty"}
    assert cp.superstep == 0

    first = await wf.run("m")
    assert (await latest(wf)).shared_state == {"a": "m", "b": "m+"}
    zero = next(c for c in await checkpoints(wf) if c.run_id == first.run_id and c.superstep == 0)
    assert zero.previous_checkpoint_id == initial
    copy = await wf.restore(initial)
    restored = await latest(wf)
    assert restored.checkpoint_id == copy
    assert restored.previous_checkpoint_id == initial
    assert restored.shared_state == {} and restored.executor_states == {} and restored.messages == []
    assert wf.status == RunState.IDLE
    result = await wf.run("z")
    assert result.outputs == ["z++"]


async def test_create_checkpoint_becomes_parent_of_next_automatic_checkpoint(store):
    wf = chain(store)
    await wf.run("m")
    manual = await wf.create_checkpoint(metadata={"k": [1, 2]})
    cp = await store.load_checkpoint(manual)
    prior = (await checkpoints(wf))[1]
    assert cp.previous_checkpoint_id == prior.checkpoint_id
    assert cp.metadata == {"k": [1, 2]}
    assert cp.shared_state == prior.shared_state and cp.executor_states == prior.executor_states
    await wf.run("n")
    zero = next(c for c in await checkpoints(wf) if c.superstep == 0)
    assert zero.previous_checkpoint_id == manual


async def test_create_checkpoint_refused_while_messages_are_queued(store):
    wf = chain(store)
    FLAGS["fail"] = True
    with pytest.raises(ExecutorFailedError):
        await wf.run("m")
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(WorkflowNotIdleError) as info:
        await wf.create_checkpoint()
    assert wf.instance_id in str(info.value)
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before


async def test_create_checkpoint_refused_after_convergence_error(store):
    class Loop(Executor):
        @handler
        async def on(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n + 1)

    loop = Loop(id="loop")
    wf = WorkflowBuilder(start_executor=loop, max_supersteps=2).add_edge(loop, loop).build(store=store)
    with pytest.raises(ConvergenceError):
        await wf.run(0)
    with pytest.raises(WorkflowNotIdleError):
        await wf.create_checkpoint()


async def test_create_checkpoint_allowed_with_pending_requests(store):
    wf = asker(store)
    await wf.run("x")
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS
    manual = await wf.create_checkpoint()
    cp = await store.load_checkpoint(manual)
    assert list(cp.pending_requests) == ["q-x"]
    assert cp.pending_requests["q-x"].data == Question("x")
    assert wf.status == RunState.IDLE_WITH_PENDING_REQUESTS


async def test_run_from_checkpoint_id_without_responses(store):
    wf = chain(store)
    await wf.run("m")
    after_first = next(cp for cp in await checkpoints(wf) if cp.superstep == 1)
    await wf.run("other")
    result = await wf.run(checkpoint_id=after_first.checkpoint_id)
    assert result.outputs == ["m++"]
    cps = await checkpoints(wf)
    # the restore copy, parented by the restored checkpoint, then supersteps 2 and 3
    assert [cp.superstep for cp in cps[:3]] == [3, 2, 1]
    assert cps[2].previous_checkpoint_id == after_first.checkpoint_id
    assert queued(cps[2]) == [("b", "m+")]
    assert_lineage(cps[:3])
    assert cps[0].shared_state == {"a": "m", "b": "m+"}


async def test_run_from_checkpoint_id_with_responses(store):
    wf = asker(store)
    await wf.run("one")
    waiting = await latest(wf)
    await wf.run(responses={"q-one": "1"})
    assert wf.status == RunState.IDLE
    result = await wf.run(checkpoint_id=waiting.checkpoint_id, responses={"q-one": "uno"})
    assert result.outputs == ["one=uno"]
    assert result.status == RunState.IDLE
    assert (await latest(wf)).pending_requests == {}


async def test_restore_checkpoint_of_a_different_graph_is_refused(store):
    wf = chain(store)
    await wf.run("m")
    foreign = asker(store)
    await foreign.run("x")
    foreign_cp = (await latest(foreign)).checkpoint_id
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(GraphSignatureMismatchError) as info:
        await wf.restore(foreign_cp)
    assert foreign_cp in str(info.value)
    with pytest.raises(GraphSignatureMismatchError):
        await wf.run(checkpoint_id=foreign_cp)
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before
    assert (await wf.run("again")).outputs == ["again++"]


async def test_restore_unknown_checkpoint(store):
    wf = chain(store)
    await wf.run("m")
    before = [cp.checkpoint_id for cp in await checkpoints(wf)]
    with pytest.raises(CheckpointNotFoundError) as info:
        await wf.restore(f"{wf.instance_id}@{'0' * 20}")
    assert "0" * 20 in str(info.value)
    with pytest.raises(CheckpointNotFoundError):
        await wf.run(checkpoint_id="missing")
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == before


async def test_handle_over_same_store_continues_from_latest(store):
    wf = chain(store, instance_id="resumable")
    FLAGS["fail"] = True
    with pytest.raises(ExecutorFailedError):
        await wf.run("m")
    FLAGS["fail"] = False
    other = chain(store, instance_id="resumable")
    result = await other.run()
    assert result.outputs == ["m++"]
    cps = await checkpoints(other)
    assert [cp.superstep for cp in cps] == [3, 2, 1, 0]
    assert_lineage(cps)
    # and the first handle sees what the second did
    assert (await wf.run("n")).outputs == ["n++"]


async def test_failed_resumed_run_still_writes_superstep_zero_next_time(store):
    wf = chain(store)
    await wf.run("m")
    after_first = next(cp for cp in await checkpoints(wf) if cp.superstep == 1)
    FLAGS["fail"] = True
    with pytest.raises(ExecutorFailedError):
        await wf.run(checkpoint_id=after_first.checkpoint_id)
    FLAGS["fail"] = False
    await wf.reset_for_new_run()
    result = await wf.run("fresh")
    assert result.outputs == ["fresh++"]
    zero = [cp for cp in await checkpoints(wf) if cp.superstep == 0 and cp.run_id == result.run_id]
    assert len(zero) == 1
    assert queued(zero[0]) == [("a", "fresh")]


async def test_failed_resumed_run_then_retry_then_fresh_run_writes_superstep_zero(store):
    wf = chain(store)
    await wf.run("m")
    after_first = next(cp for cp in await checkpoints(wf) if cp.superstep == 1)
    FLAGS["fail"] = True
    with pytest.raises(ExecutorFailedError):
        await wf.run(checkpoint_id=after_first.checkpoint_id)
    FLAGS["fail"] = False
    assert (await wf.run()).outputs == ["m++"]
    result = await wf.run("fresh")
    kinds = [(e.type, e.superstep) for e in result.events if e.type == "checkpoint_created"]
    assert kinds == [
        ("checkpoint_created", 0),
        ("checkpoint_created", 1),
        ("checkpoint_created", 2),
        ("checkpoint_created", 3),
    ]
    zero = await store.load_checkpoint(
        result.events[[e.type for e in result.events].index("checkpoint_created")].data
    )
    assert zero.superstep == 0 and queued(zero) == [("a", "fresh")]
