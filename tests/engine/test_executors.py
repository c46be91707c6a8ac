"""Executors: handlers chosen by annotation, sync handlers, function executors, fan-in list handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from barrierflow.engine import (
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowValidationError,
    executor,
    handler,
    register_type,
)


@dataclass
class Animal:
    name: str


@register_type
@dataclass
class Dog(Animal):
    pass


@register_type
@dataclass
class Rock:
    weight: int


class Classifier(Executor):
    """Specific handlers by isinstance; anything else falls to the catch-all."""

    @handler
    async def on_animal(self, msg: Animal, ctx: WorkflowContext) -> None:
        await ctx.yield_output(("animal", type(msg).__name__))

    @handler
    async def on_number(self, msg: int | float, ctx: WorkflowContext) -> None:
        await ctx.yield_output(("number", msg))

    @handler
    async def on_anything(self, msg: object, ctx: WorkflowContext) -> None:
        await ctx.yield_output(("other", type(msg).__name__))


class AnyCatcher(Executor):
    @handler
    async def on_any(self, msg: Any, ctx: WorkflowContext) -> None:
        await ctx.yield_output(("any", msg))


class Fanner(Executor):
    @handler
    async def go(self, msg: list, ctx: WorkflowContext) -> None:
        for item in msg:
            await ctx.send_message(item)


class Dispatch(Executor):
    """Sends each element of its input on; used to feed several messages of different types."""

    @handler
    async def on_list(self, msg: tuple, ctx: WorkflowContext) -> None:
        for item in msg:
            await ctx.send_message(item)


class SyncHandlers(Executor):
    """A sync handler using every queuing call of the context without awaiting."""

    @handler
    def on_text(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.send_message(msg + "!")
        ctx.yield_output("sync:" + msg)
        ctx.set_state("seen", msg)
        ctx.set_executor_state({"last": msg})


class SyncSink(Executor):
    @handler
    def on_text(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.yield_output(("sink", msg, ctx.get_state("seen")))


@executor(id="shout")
async def shout(text: str, ctx: WorkflowContext) -> None:
    await ctx.send_message(text.upper())


@executor
def echo(text: str, ctx: WorkflowContext) -> str:
    ctx.yield_output("echo:" + text)
    return "ignored return value"


@executor(id="counted")
def counted(text: str) -> None:
    """A function executor without a context parameter."""
    COUNTED.append(text)


COUNTED: list[str] = []


class Joiner(Executor):
    @handler
    async def join(self, msgs: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(("joined", msgs))


class Left(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message("L-" + msg)


class Right(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message("R-" + msg)


class Start(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(msg)


async def test_class_handlers_routed_by_isinstance_union_and_catch_all():
    dispatch = Dispatch(id="dispatch")
    classifier = Classifier(id="classifier")
    wf = WorkflowBuilder(start_executor=dispatch).add_edge(dispatch, classifier).build()
    result = await wf.run((Dog("rex"), Animal("generic"), 3, 2.5, Rock(4), "text"))
    assert result.outputs == [
        ("animal", "Dog"),  # subclass instance goes to the Animal handler (isinstance)
        ("animal", "Animal"),
        ("number", 3),  # int | float union
        ("number", 2.5),
        ("other", "Rock"),  # object catch-all only when no specific handler matches
        ("other", "str"),
    ]


async def test_any_annotation_takes_everything():
    catcher = AnyCatcher(id="catcher")
    dispatch = Dispatch(id="dispatch")
    wf = WorkflowBuilder(start_executor=dispatch).add_edge(dispatch, catcher).build()
    result = await wf.run((1, "x", None, Rock(1)))
    assert result.outputs == [("any", 1), ("any", "x"), ("any", None), ("any", Rock(1))]


async def test_sync_handlers_call_the_context_without_await():
    first = SyncHandlers(id="first")
    sink = SyncSink(id="sink")
    wf = WorkflowBuilder(start_executor=first).add_edge(first, sink).build()
    result = await wf.run("hi")
    assert result.outputs == ["sync:hi", ("sink", "hi!", "hi")]
    cp = await wf.store.latest_checkpoint(wf.instance_id)
    assert cp.shared_state == {"seen": "hi"}
    assert cp.executor_states == {"first": {"last": "hi"}}


async def test_context_calls_return_awaitables_that_are_already_done():
    seen: list[Any] = []

    class Probe(Executor):
        @handler
        def on(self, msg: str, ctx: WorkflowContext) -> None:
            for awaitable in (ctx.send_message("x"), ctx.yield_output("y"), ctx.request_info("q", str)):
                seen.append(awaitable)

    probe = Probe(id="probe")
    wf = WorkflowBuilder(start_executor=probe).build()
    result = await wf.run("go")
    assert result.outputs == ["y"]
    # awaiting them later works and does not queue twice
    values = [await a for a in seen]
    assert values[0] is None and values[1] is None and isinstance(values[2], str)
    assert list(result.pending_requests) == [values[2]]


async def test_function_executors_sync_and_async_with_and_without_id():
    assert shout.id == "shout"
    assert echo.id == "echo"  # bare @executor: the function name
    wf = WorkflowBuilder(start_executor=shout).add_edge(shout, echo).build()
    result = await wf.run("abc")
    assert result.outputs == ["echo:ABC"]


async def test_function_executor_without_context_parameter():
    COUNTED.clear()
    wf = WorkflowBuilder(start_executor=counted).build()
    result = await wf.run("one")
    assert COUNTED == ["one"]
    assert result.outputs == []


def test_executor_without_handler_is_rejected():
    class Empty(Executor):
        async def not_a_handler(self, msg: str, ctx: WorkflowContext) -> None: ...

    with pytest.raises(WorkflowValidationError) as info:
        Empty(id="empty")
    assert "empty" in str(info.value)
    assert "handler" in str(info.value)


async def test_fan_in_handler_receives_a_list():
    start, left, right, join = Start(id="start"), Left(id="left"), Right(id="right"), Joiner(id="join")
    wf = (
        WorkflowBuilder(start_executor=start)
        .add_fan_out_edges(start, [left, right])
        .add_fan_in_edges([left, right], join)
        .build()
    )
    result = await wf.run("m")
    assert result.outputs == [("joined", ["L-m", "R-m"])]


async def test_executor_id_defaults_to_class_name():
    assert Start().id == "Start"


async def test_context_exposes_where_we_are():
    seen: dict[str, Any] = {}

    class Where(Executor):
        @handler
        async def on(self, msg: str, ctx: WorkflowContext) -> None:
            seen.update(
                executor_id=ctx.executor_id,
                run_id=ctx.run_id,
                superstep=ctx.superstep,
                instance_id=ctx.instance_id,
                sources=list(ctx.source_executor_ids),
            )

    start, where = Start(id="start"), Where(id="where")
    wf = WorkflowBuilder(start_executor=start).add_edge(start, where).build(instance_id="inst-where")
    result = await wf.run("x")
    assert seen == {
        "executor_id": "where",
        "run_id": result.run_id,
        "superstep": 2,
        "instance_id": "inst-where",
        "sources": ["start"],
    }
