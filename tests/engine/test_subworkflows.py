"""``WorkflowExecutor``: a workflow used as one executor of another, in process.

Distributed runs (the child running inside the worker) are in ``tests/workers/test_workers_retries.py``;
resuming a waiting child from another process is in ``tests/test_examples.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from barrierflow.engine import (
    ConvergenceError,
    Executor,
    ExecutorFailedError,
    RetryPolicy,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowEvent,
    WorkflowExecutor,
    WorkflowValidationError,
    executor,
    handler,
    register_type,
    response_handler,
)

from .bf_helpers import checkpoints, latest, of_type

TRACE: list[Any] = []
FAILURES = {"left": 0}


@pytest.fixture(autouse=True)
def _clear():
    TRACE.clear()
    FAILURES["left"] = 0
    yield
    TRACE.clear()


@register_type
@dataclass
class Question:
    text: str
    depth: int


# -- a child that outputs twice, keeps executor and shared state, and sends an event ------------------------------


class Count(Executor):
    """Child executor: counts its deliveries per execution, in executor and shared state."""

    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        count = ctx.get_executor_state(0) + 1
        ctx.set_executor_state(count)
        ctx.set_state("child-seen", ctx.get_state("child-seen", 0) + 1)
        if FAILURES["left"]:
            FAILURES["left"] -= 1
            raise ConnectionError("child dependency down")
        await ctx.add_event(WorkflowEvent("counted", count))
        await ctx.send_message(f"{text}#{count}")

    async def reset(self) -> None:
        TRACE.append(("reset", self.id))


@executor(id="emit")
async def emit_twice(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(f"{text}:first")
    await ctx.yield_output(f"{text}:second")


def counting_child() -> WorkflowBuilder:
    count = Count(id="count")
    return WorkflowBuilder(name="counting", start_executor=count).add_edge(count, emit_twice)


class Collect(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)


class Start(Executor):
    @handler
    async def on(self, texts: list, ctx: WorkflowContext) -> None:
        ctx.set_state("parent", True)
        for text in texts:
            await ctx.send_message(text)


def parent(store=None, child: WorkflowExecutor | None = None, **builder: Any):
    start = Start(id="start")
    child = child or WorkflowExecutor(counting_child(), id="child")
    sink = Collect(id="sink")
    return (
        WorkflowBuilder(name="parent", start_executor=start, **builder)
        .add_chain([start, child, sink])
        .build(store=store, instance_id="parent-1")
    )


async def test_child_outputs_are_sent_on_along_the_parents_edges_and_each_message_starts_fresh(store):
    wf = parent(store)
    result = await wf.run(["a", "b"])
    # two messages, two fresh executions: each child count starts at 1 again
    assert result.outputs == ["a#1:first", "a#1:second", "b#1:first", "b#1:second"]
    cp = await latest(wf)
    assert cp.shared_state == {"parent": True}  # the child's shared state is its own
    assert "child" not in cp.executor_states  # nothing waits: nothing is kept
    counted = of_type(result.events, "counted")
    assert [(e.executor_id, e.data) for e in counted] == [("child/count", 1), ("child/count", 1)]
    assert result.status == RunState.IDLE


async def test_a_child_failure_fails_the_parents_delivery_and_the_executors_retry_policy_reruns_it():
    child = WorkflowExecutor(counting_child(), id="child")
    child.retry = RetryPolicy(max_attempts=3, initial_backoff=0)
    FAILURES["left"] = 2
    result = await parent(child=child).run(["x"])
    assert result.outputs == ["x#1:first", "x#1:second"]  # the third execution, from scratch
    retries = of_type(result.events, "executor_retry")
    assert [e.executor_id for e in retries] == ["child", "child"]
    assert retries[0].details["error_type"] == "ExecutorFailedError"  # type: ignore[index]
    assert "executor 'count' failed" in retries[0].details["message"]  # type: ignore[index]

    FAILURES["left"] = 5
    with pytest.raises(ExecutorFailedError) as caught:
        await parent(child=WorkflowExecutor(counting_child(), id="child")).run(["y"])
    assert caught.value.executor_id == "child"
    assert "ConnectionError: child dependency down" in caught.value.message
    assert "in sub-workflow 'counting' of executor 'child'" in caught.value.message


# -- human in the loop through the parent, nested to any depth ---------------------------------------------------


class Ask(Executor):
    """Asks a question about its input; answers it comes back with become outputs of its workflow."""

    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        ctx.set_executor_state({"asked": text})
        await ctx.request_info(Question(text, 0), str, request_id=f"q-{text}")

    @response_handler
    async def answered(self, question: Question, answer: str, ctx: WorkflowContext) -> None:
        state = ctx.get_executor_state()
        await ctx.yield_output(f"{state['asked']}={answer}")

    async def reset(self) -> None:
        TRACE.append(("reset", self.id))


def asking(depth: int) -> WorkflowBuilder:
    """A workflow that asks at the bottom of ``depth`` levels of nested sub-workflows."""
    if depth == 0:
        ask = Ask(id="ask")
        return WorkflowBuilder(name="asking-0", start_executor=ask)
    inner = WorkflowExecutor(asking(depth - 1), id=f"level{depth - 1}")
    upper = Collect(id=f"upper{depth}")
    return WorkflowBuilder(name=f"asking-{depth}", start_executor=inner).add_edge(inner, upper)


@pytest.mark.parametrize("depth", [1, 3])
async def test_a_childs_request_is_the_parents_and_its_answer_continues_that_execution(store, depth: int):
    top = WorkflowExecutor(asking(depth), id="top")
    wf = parent(store, child=top)
    paused = await wf.run(["p", "q"])
    assert paused.status == RunState.IDLE_WITH_PENDING_REQUESTS
    assert set(paused.pending_requests) == {"q-p", "q-q"}
    event = paused.pending_requests["q-p"]
    assert (event.executor_id, event.data, event.details) == (
        "top",
        Question("p", 0),
        {"response_type": "str"},
    )
    kept = (await latest(wf)).executor_states["top"]
    assert set(kept["requests"]) == {"q-p", "q-q"} and len(kept["executions"]) == 2

    first = await wf.run(responses={"q-q": "yes"})
    assert first.outputs == ["q=yes"]  # passed up through every level, then on to the sink
    assert list(first.pending_requests) == ["q-p"]
    second = await wf.run(responses={"q-p": "no"})
    assert second.outputs == ["p=no"]
    assert second.status == RunState.IDLE
    assert (await latest(wf)).executor_states["top"] == {"executions": {}, "requests": {}}


async def test_a_waiting_child_resumes_from_the_parents_checkpoint_in_a_fresh_handle(store):
    wf = parent(store, child=WorkflowExecutor(asking(2), id="top"))
    await wf.run(["r"])
    fresh = parent(store, child=WorkflowExecutor(asking(2), id="top"))  # new objects, same store
    assert (await fresh.run(responses={"q-r": "later"})).outputs == ["r=later"]


async def test_the_parents_reset_reaches_the_child_and_its_reset_hooks(store):
    wf = parent(store, child=WorkflowExecutor(asking(2), id="top"))
    await wf.run(["s"])
    assert await wf.pending_requests()
    await wf.reset_for_new_run()
    assert sorted(TRACE) == [("reset", "ask")]  # the hook two levels down ran
    assert await wf.pending_requests() == {}
    assert (await latest(wf)).executor_states == {}


async def test_a_child_that_does_not_converge_fails_the_delivery():
    class Loop(Executor):
        @handler
        async def on(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n + 1)

    loop = Loop(id="loop")
    looping = WorkflowBuilder(name="looping", start_executor=loop, max_supersteps=5).add_edge(loop, loop)

    @executor(id="numbers")
    async def numbers(items: list, ctx: WorkflowContext) -> None:
        await ctx.send_message(1)

    wf = (
        WorkflowBuilder(name="p", start_executor=numbers)
        .add_edge(numbers, WorkflowExecutor(looping, id="l"))
        .build()
    )
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run([])
    assert caught.value.error_type == ConvergenceError.__name__
    assert "max_supersteps=5" in caught.value.message


# -- graph: validation, signature, mermaid ------------------------------------------------------------------------


def test_the_child_graph_is_validated_when_the_executor_is_made() -> None:
    with pytest.raises(WorkflowValidationError):
        WorkflowExecutor(WorkflowBuilder(name="empty"), id="x")
    with pytest.raises(TypeError, match="WorkflowBuilder"):
        WorkflowExecutor(counting_child().build(), id="x")  # type: ignore[arg-type]


def test_edges_into_a_sub_workflow_are_checked_against_its_start_executor() -> None:
    @executor(id="numbers", output=int)
    async def numbers(n: int, ctx: WorkflowContext) -> None: ...

    with pytest.raises(WorkflowValidationError, match="'numbers' sends int but 'child' handles str"):
        WorkflowBuilder(name="p", start_executor=numbers).add_edge(
            numbers, WorkflowExecutor(counting_child(), id="child")
        ).build()


def test_the_child_graph_is_part_of_the_parents_signature() -> None:
    def bigger_child() -> WorkflowBuilder:
        return counting_child().add_edge(emit_twice, Collect(id="extra"))

    same = parent(child=WorkflowExecutor(counting_child(), id="child")).graph_signature
    assert parent(child=WorkflowExecutor(counting_child(), id="child")).graph_signature == same
    assert parent(child=WorkflowExecutor(bigger_child(), id="child")).graph_signature != same


def test_mermaid_draws_a_sub_workflow_as_a_subgraph() -> None:
    text = parent(child=WorkflowExecutor(asking(1), id="top")).to_mermaid()
    assert text.splitlines() == [
        "flowchart TD",
        '  n0[["start"]]',
        '  subgraph n1 ["top"]',
        '    subgraph n1_n0 ["level0"]',
        '      n1_n0_n0[["ask"]]',
        "    end",
        '    n1_n1["upper1"]',
        "    n1_n0 --> n1_n1",
        "  end",
        '  n2["sink"]',
        "  n0 --> n1",
        "  n1 --> n2",
    ]


async def test_two_executions_waiting_on_the_same_request_id_are_refused():
    wf = parent(child=WorkflowExecutor(asking(0), id="top"))
    with pytest.raises(ExecutorFailedError, match="two of its executions wait for request 'q-same'"):
        await wf.run(["same", "same"])


async def test_the_parent_checkpoints_hold_the_child_state_only_while_it_waits(store):
    wf = parent(store, child=WorkflowExecutor(asking(0), id="top"))
    await wf.run(["t"])
    await wf.run(responses={"q-t": "done"})
    states = [cp.executor_states.get("top") for cp in reversed(await checkpoints(wf))]
    waiting = [s for s in states if s and s["executions"]]
    assert waiting and all(set(s["requests"]) == {"q-t"} for s in waiting)
    assert states[-1] == {"executions": {}, "requests": {}}
