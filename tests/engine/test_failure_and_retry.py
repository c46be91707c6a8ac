"""A failing handler fails the superstep: the instance stays at the last barrier; run() retries it."""

from __future__ import annotations

import asyncio

import pytest

from barrierflow.engine import (
    Executor,
    ExecutorFailedError,
    RunState,
    SerializationError,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowError,
    WorkflowEvent,
    handler,
)

from .bf_helpers import checkpoints, latest, of_type, queued, types_of

FAIL = {"flaky": True}
RAISED: list[BaseException] = []


@pytest.fixture(autouse=True)
def _reset_flags():
    FAIL["flaky"] = True
    RAISED.clear()
    yield
    FAIL["flaky"] = True
    RAISED.clear()


class Start(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("start", msg)
        await ctx.send_message(msg)


class Flaky(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("flaky-wrote", True)
        ctx.set_executor_state("flaky-state")
        await ctx.yield_output(f"flaky:{msg}")
        await asyncio.sleep(0.01)
        if FAIL["flaky"]:
            error = ValueError(f"boom on {msg}")
            RAISED.append(error)
            raise error


class Sibling(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_state("sibling-wrote", msg)
        ctx.set_executor_state({"seen": msg})
        await ctx.yield_output(f"sibling:{msg}")
        await ctx.send_message(f"after:{msg}")


class End(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(msg)


def build(store=None):
    start, flaky, sibling, end = Start(id="start"), Flaky(id="flaky"), Sibling(id="sibling"), End(id="end")
    return (
        WorkflowBuilder(name="failing", start_executor=start)
        .add_fan_out_edges(start, [sibling, flaky])
        .add_edge(sibling, end)
        .build(store=store)
    )


async def test_failure_raises_executor_failed_error_with_details():
    wf = build()
    with pytest.raises(ExecutorFailedError) as info:
        await wf.run("x")
    error = info.value
    assert isinstance(error, WorkflowError)
    assert error.executor_id == "flaky"
    assert error.error_type == "ValueError"
    assert error.message == "boom on x"
    assert "ValueError: boom on x" in error.traceback
    assert "in on" in error.traceback  # the handler's frame
    assert error.__cause__ is RAISED[0]
    assert "flaky" in str(error) and "boom on x" in str(error)
    assert wf.status == RunState.FAILED


async def test_failed_superstep_leaves_instance_at_last_barrier_then_retry_succeeds(store):
    wf = build(store)
    with pytest.raises(ExecutorFailedError):
        await wf.run("x")
    cps = await checkpoints(wf)
    assert [cp.superstep for cp in cps] == [1, 0]  # nothing written for the failed superstep 2
    barrier = cps[0]
    assert queued(barrier) == [("sibling", "x"), ("flaky", "x")]  # the failed superstep's inputs stay queued
    assert barrier.shared_state == {"start": "x"}  # sibling's and flaky's writes discarded
    assert barrier.executor_states == {}
    assert wf.status == RunState.FAILED

    # retrying without fixing fails the same way and changes nothing
    with pytest.raises(ExecutorFailedError):
        await wf.run()
    assert [cp.checkpoint_id for cp in await checkpoints(wf)] == [cp.checkpoint_id for cp in cps]

    FAIL["flaky"] = False
    stream = wf.stream()
    events = [event async for event in stream]
    result = await stream.result()
    assert result.status == RunState.IDLE
    assert wf.status == RunState.IDLE
    # the retried superstep is superstep 2 again, and its outputs are emitted once
    assert [e.superstep for e in of_type(events, "superstep_started")] == [2, 3]
    assert result.outputs == ["sibling:x", "flaky:x", "after:x"]
    final = await latest(wf)
    assert final.shared_state == {"start": "x", "sibling-wrote": "x", "flaky-wrote": True}
    assert final.executor_states == {"sibling": {"seen": "x"}, "flaky": "flaky-state"}
    assert final.messages == []
    assert (await checkpoints(wf))[2].checkpoint_id == barrier.checkpoint_id  # lineage continues
    assert (await checkpoints(wf))[1].previous_checkpoint_id == barrier.checkpoint_id


async def test_failed_superstep_emits_no_outputs_and_ends_with_failed_events():
    wf = build()
    stream = wf.stream("x")
    seen = []
    with pytest.raises(ExecutorFailedError):
        async for event in stream:
            seen.append(event)
    kinds = types_of(seen)
    assert "output" not in kinds  # sibling yielded an output, but its superstep never committed
    assert kinds.count("superstep_started") == 2
    assert kinds.count("superstep_completed") == 1
    failed_exec = of_type(seen, "executor_failed")
    assert [(e.executor_id, e.superstep, e.details["error_type"]) for e in failed_exec] == [
        ("flaky", 2, "ValueError")
    ]
    assert kinds[-2:] == ["failed", "status"]
    assert seen[-2].executor_id == "flaky"
    assert seen[-1].data == RunState.FAILED
    # executor_invoked/completed are emitted as they happen, even in the failed superstep
    step2 = [e for e in seen if e.superstep == 2 and e.type.startswith("executor_")]
    assert {(e.type, e.executor_id) for e in step2} >= {
        ("executor_invoked", "sibling"),
        ("executor_completed", "sibling"),
        ("executor_invoked", "flaky"),
        ("executor_failed", "flaky"),
    }

    FAIL["flaky"] = False
    result = await wf.run()
    assert result.outputs.count("sibling:x") == 1


async def test_failure_in_first_superstep_keeps_the_input_queued(store):
    class Bad(Executor):
        @handler
        def on(self, msg: str, ctx: WorkflowContext) -> None:  # a sync handler
            ctx.yield_output("never")
            if FAIL["flaky"]:
                raise KeyError("nope")
            ctx.yield_output(f"ok:{msg}")

    wf = WorkflowBuilder(start_executor=Bad(id="bad")).build(store=store)
    with pytest.raises(ExecutorFailedError) as info:
        await wf.run("in")
    assert info.value.executor_id == "bad" and info.value.error_type == "KeyError"
    assert isinstance(info.value.__cause__, KeyError)
    cp = await latest(wf)
    assert cp.superstep == 0 and queued(cp) == [("bad", "in")]
    FAIL["flaky"] = False
    result = await wf.run()
    assert result.outputs == ["never", "ok:in"]


async def test_reset_for_new_run_discards_the_failed_superstep(store):
    wf = build(store)
    with pytest.raises(ExecutorFailedError):
        await wf.run("x")
    await wf.reset_for_new_run()
    assert wf.status == RunState.IDLE
    cp = await latest(wf)
    assert cp.messages == [] and cp.shared_state == {} and cp.previous_checkpoint_id is None
    with pytest.raises(ValueError):
        await wf.run()
    FAIL["flaky"] = False
    result = await wf.run("y")
    assert result.outputs == ["sibling:y", "flaky:y", "after:y"]


class SlowSibling(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await asyncio.sleep(0.5)
        ctx.set_state("slow", True)
        await ctx.yield_output("slow")


async def test_slow_sibling_results_are_discarded():
    start, flaky, slow = Start(id="start"), Flaky(id="flaky"), SlowSibling(id="slow")
    wf = WorkflowBuilder(start_executor=start).add_fan_out_edges(start, [slow, flaky]).build()
    with pytest.raises(ExecutorFailedError):
        await wf.run("x")
    cp = await latest(wf)
    assert cp.shared_state == {"start": "x"}
    assert queued(cp) == [("slow", "x"), ("flaky", "x")]


class _SendsUnencodable(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        ctx.set_state("kept", "no")
        await ctx.send_message({"payload": [1, object()]})


class _TakesAnything(Executor):
    @handler
    async def on(self, message: object, ctx: WorkflowContext) -> None:
        await ctx.yield_output(message)


async def test_unencodable_message_fails_naming_route_and_path_and_commits_nothing():
    source, sink = _SendsUnencodable("source"), _TakesAnything("sink")
    wf = WorkflowBuilder(name="unencodable", start_executor=source).add_edge(source, sink).build()
    with pytest.raises(SerializationError) as caught:
        await wf.run("go")
    text = str(caught.value)
    assert "the message for 'sink' from 'source'" in text
    assert "$['payload'][1]" in text
    assert wf.status == RunState.FAILED
    latest_cp = await wf.store.latest_checkpoint(wf.instance_id)
    assert latest_cp.superstep == 0  # only the run-entry checkpoint: superstep 1 never committed
    assert latest_cp.shared_state == {}
    assert [d.message for d in latest_cp.messages] == ["go"]


# -- committed state cannot be changed behind set_* -----------------------------------------------------------

APPEND_FAILS = {"on": True}


class Appender(Executor):
    """Appends to the list it reads from its executor state and from shared state, in place, then fails."""

    @handler
    async def on(self, item: str, ctx: WorkflowContext) -> None:
        mine = ctx.get_executor_state([])
        mine.append(item)
        everyone = ctx.get_state("items", [])
        everyone.append(item)
        if APPEND_FAILS["on"]:
            raise RuntimeError("fails after changing what it read")
        ctx.set_executor_state(mine)
        ctx.set_state("items", everyone)
        await ctx.yield_output((list(mine), list(everyone)))


def appender(store, instance_id="appender"):
    node = Appender(id="appender")
    return WorkflowBuilder(name="appender", start_executor=node).build(instance_id=instance_id, store=store)


async def test_a_failed_superstep_that_mutated_what_it_read_leaves_the_handle_at_the_last_barrier(store):
    APPEND_FAILS["on"] = False
    wf = appender(store)
    assert (await wf.run("a")).outputs == [(["a"], ["a"])]
    APPEND_FAILS["on"] = True
    with pytest.raises(ExecutorFailedError):
        await wf.run("b")
    APPEND_FAILS["on"] = False
    retried = await wf.run()  # the same handle retries the failed superstep
    fresh = await appender(store).run("c")  # a fresh handle over the same store
    assert retried.outputs == [(["a", "b"], ["a", "b"])]  # not ['a', 'b', 'b']
    assert fresh.outputs == [(["a", "b", "c"], ["a", "b", "c"])]


async def test_changing_a_read_value_without_set_commits_nothing(store):
    class ReadOnly(Executor):
        @handler
        async def on(self, item: str, ctx: WorkflowContext) -> None:
            mine = ctx.get_executor_state()
            if mine is None:
                ctx.set_executor_state(["first"])
            else:
                mine.append(item)  # no set_*: not a write
            ctx.get_state("items").append(item)
            assert ctx.get_state("items")[-1] == item  # this executor sees its own copy for the superstep
            await ctx.yield_output(item)

    class Seed(Executor):
        @handler
        async def on(self, item: str, ctx: WorkflowContext) -> None:
            ctx.set_executor_state(["seed"])
            ctx.set_state("items", ["seed"])
            await ctx.send_message(item)

    seed, reader = Seed(id="seed"), ReadOnly(id="reader")
    wf = WorkflowBuilder(name="read-only", start_executor=seed).add_edge(seed, reader).build(store=store)
    await wf.run("x")
    await wf.run("y")
    cp = await latest(wf)
    assert cp.shared_state == {"items": ["seed"]}
    assert cp.executor_states == {"seed": ["seed"], "reader": ["first"]}
    assert wf._state.shared_state == {"items": ["seed"]}  # the handle's cached state, too
    assert wf._state.executor_states["reader"] == ["first"]


async def test_an_unencodable_output_fails_the_superstep_naming_it_and_commits_nothing(store):
    class YieldsCode(Executor):
        @handler
        async def on(self, text: str, ctx: WorkflowContext) -> None:
            ctx.set_state("kept", "no")
            await ctx.yield_output(text)
            await ctx.add_event(WorkflowEvent("custom", data={"callback": print}))

    wf = WorkflowBuilder(name="yields-code", start_executor=YieldsCode(id="yields")).build(store=store)
    events = []
    with pytest.raises(SerializationError) as caught:
        async for event in wf.stream("x"):
            events.append(event)
    assert str(caught.value).startswith("the 'custom' event added by 'yields': cannot encode")
    assert "builtin_function_or_method" in str(caught.value)
    assert of_type(events, "output") == []  # nothing of the superstep was emitted
    assert wf.status == RunState.FAILED
    assert (await latest(wf)).superstep == 0
