"""WorkflowBuilder.build() validation: WorkflowValidationError messages name the executors at fault."""

from __future__ import annotations

import pytest

from barrierflow.engine import (
    Case,
    Default,
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowError,
    WorkflowValidationError,
    handler,
)


class SendsInt(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(len(msg))


class SendsUndeclared(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(len(msg))


class SendsIntByOutput(Executor):
    @handler(output=int)
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(len(msg))


class TakesStr(Executor):
    @handler
    async def on(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(msg)


class TakesInt(Executor):
    @handler
    async def on(self, msg: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output(msg)


def _error(builder: WorkflowBuilder) -> str:
    with pytest.raises(WorkflowValidationError) as info:
        builder.build()
    assert isinstance(info.value, WorkflowError)
    return str(info.value)


def test_duplicate_ids_named():
    a, b = TakesStr(id="same"), TakesStr(id="same")
    start = SendsUndeclared(id="start")
    message = _error(WorkflowBuilder(start_executor=start).add_fan_out_edges(start, [a, b]))
    assert "duplicate" in message
    assert "'same'" in message


def test_same_executor_object_added_twice_is_fine():
    start, a = SendsUndeclared(id="start"), TakesInt(id="a")
    wf = WorkflowBuilder(start_executor=start).add_edge(start, a).add_executor(a).add_chain([a]).build()
    assert set(wf.executors) == {"start", "a"}


def test_unknown_executor_referenced_by_id():
    start = SendsUndeclared(id="start")
    message = _error(WorkflowBuilder(start_executor=start).add_edge("start", "ghost"))
    assert "unknown" in message
    assert "'ghost'" in message


def test_unknown_start_executor_by_id():
    message = _error(WorkflowBuilder(start_executor="nobody"))
    assert "'nobody'" in message


def test_unreachable_executor_named():
    start, reached, orphan = SendsUndeclared(id="start"), TakesInt(id="reached"), TakesInt(id="orphan")
    builder = WorkflowBuilder(start_executor=start).add_edge(start, reached).add_executor(orphan)
    message = _error(builder)
    assert "unreachable" in message
    assert "'orphan'" in message
    assert "'reached'" not in message


def test_unreachable_subgraph_named():
    start, end = SendsUndeclared(id="start"), TakesInt(id="end")
    island_a, island_b = SendsUndeclared(id="island_a"), TakesInt(id="island_b")
    builder = WorkflowBuilder(start_executor=start).add_edge(start, end).add_edge(island_a, island_b)
    message = _error(builder)
    assert "'island_a'" in message and "'island_b'" in message


def test_edge_type_mismatch_with_declared_context_type():
    src, dst = SendsInt(id="counter"), TakesStr(id="printer")
    message = _error(WorkflowBuilder(start_executor=src).add_edge(src, dst))
    assert "'counter'" in message and "'printer'" in message
    assert "int" in message and "str" in message


def test_edge_type_mismatch_with_handler_output_declaration():
    src, dst = SendsIntByOutput(id="counter"), TakesStr(id="printer")
    message = _error(WorkflowBuilder(start_executor=src).add_edge(src, dst))
    assert "'counter'" in message and "'printer'" in message


def test_edge_type_mismatch_in_fan_out_names_the_bad_target_only():
    src, good, bad = SendsInt(id="src"), TakesInt(id="good"), TakesStr(id="bad")
    message = _error(WorkflowBuilder(start_executor=src).add_fan_out_edges(src, [good, bad]))
    assert "'bad'" in message
    assert "'good'" not in message


def test_undeclared_context_is_not_type_checked():
    src, dst = SendsUndeclared(id="src"), TakesStr(id="dst")
    wf = WorkflowBuilder(start_executor=src).add_edge(src, dst).build()
    assert set(wf.executors) == {"src", "dst"}


def test_matching_declared_types_build():
    src, dst = SendsInt(id="src"), TakesInt(id="dst")
    wf = WorkflowBuilder(start_executor=src).add_edge(src, dst).build()
    assert wf.name == "workflow" or isinstance(wf.name, str)


def test_switch_without_default():
    src, a, b = SendsUndeclared(id="router"), TakesInt(id="a"), TakesInt(id="b")
    builder = WorkflowBuilder(start_executor=src).add_switch_case_edge_group(
        src, [Case(condition=lambda m: m > 1, target=a), Case(condition=lambda m: True, target=b)]
    )
    message = _error(builder)
    assert "'router'" in message and "Default" in message


def test_switch_default_not_last():
    src, a, b = SendsUndeclared(id="router"), TakesInt(id="a"), TakesInt(id="b")
    builder = WorkflowBuilder(start_executor=src).add_switch_case_edge_group(
        src, [Default(target=b), Case(condition=lambda m: m > 1, target=a)]
    )
    message = _error(builder)
    assert "'router'" in message and "Default" in message


def test_switch_two_defaults():
    src, a, b = SendsUndeclared(id="router"), TakesInt(id="a"), TakesInt(id="b")
    builder = WorkflowBuilder(start_executor=src).add_switch_case_edge_group(
        src, [Case(condition=lambda m: m > 1, target=a), Default(target=a), Default(target=b)]
    )
    message = _error(builder)
    assert "'router'" in message and "Default" in message


def test_missing_start_executor():
    message = _error(WorkflowBuilder(name="headless"))
    assert "start" in message


def test_several_problems_reported_together_with_workflow_name():
    a, b = TakesStr(id="dup"), TakesStr(id="dup")
    start = SendsUndeclared(id="start")
    builder = WorkflowBuilder(name="broken", start_executor=start).add_fan_out_edges(start, [a, b])
    builder.add_switch_case_edge_group(start, [Case(condition=lambda m: True, target=a)])
    message = _error(builder)
    assert "'broken'" in message
    assert "duplicate" in message and "'dup'" in message
    assert "Default" in message


def test_an_executor_passed_as_the_name_is_a_clear_type_error():
    start = TakesStr(id="start")
    with pytest.raises(TypeError, match="start_executor="):
        WorkflowBuilder(start)


def test_a_duplicate_edge_is_rejected_naming_both_ends():
    a, b = TakesStr(id="a"), TakesStr(id="b")
    with pytest.raises(WorkflowValidationError, match="duplicate edge 'a' -> 'b'"):
        WorkflowBuilder(name="dup", start_executor=a).add_edge(a, b).add_edge(a, b).build()


def test_a_fan_out_listing_a_target_twice_is_rejected():
    a, b, c = TakesStr(id="a"), TakesStr(id="b"), TakesStr(id="c")
    with pytest.raises(WorkflowValidationError, match="'b' more than once"):
        WorkflowBuilder(name="dup", start_executor=a).add_fan_out_edges(a, [b, c, b]).build()
