"""Workflows the server tests submit (imported by the test process and by the coordinators they start).

``typed_order`` takes a dataclass, a pydantic model or a plain string at its start executor, so the API's
JSON-to-type conversion has something to convert; ``approval`` asks for a typed answer (``Verdict``);
``echo_item`` outputs a registered type (``Item``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pydantic import BaseModel

from barrierflow.engine import (
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    register_type,
    register_workflow,
    response_handler,
)


@register_type(name="tests.server.Item")
@dataclass(slots=True)
class Item:
    sku: str
    quantity: int = 1


@register_type(name="tests.server.Order")
@dataclass(slots=True)
class Order:
    customer: str
    items: list[Item] = field(default_factory=list)
    rush: bool = False


@register_type(name="tests.server.Refund")
class Refund(BaseModel):
    order_id: str
    amount: float


@register_type(name="tests.server.Verdict")
@dataclass(slots=True)
class Verdict:
    approved: bool
    note: str = ""


class Intake(Executor):
    @handler
    async def on_order(self, order: Order, ctx: WorkflowContext) -> None:
        units = sum(item.quantity for item in order.items)
        await ctx.yield_output(
            {"kind": "order", "customer": order.customer, "units": units, "rush": order.rush}
        )

    @handler
    async def on_refund(self, refund: Refund, ctx: WorkflowContext) -> None:
        await ctx.yield_output({"kind": "refund", "order_id": refund.order_id, "amount": refund.amount})

    @handler
    async def on_note(self, note: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output({"kind": "note", "text": note})


@register_workflow
def typed_order() -> WorkflowBuilder:
    return WorkflowBuilder(name="typed_order", start_executor=Intake(id="intake"))


class Gate(Executor):
    @handler
    async def on_topic(self, topic: str, ctx: WorkflowContext) -> None:
        await ctx.request_info({"question": f"approve {topic}?"}, Verdict)

    @response_handler
    async def on_verdict(self, request: dict, verdict: Verdict, ctx: WorkflowContext) -> None:
        await ctx.yield_output({"approved": verdict.approved, "note": verdict.note})


@register_workflow
def approval() -> WorkflowBuilder:
    return WorkflowBuilder(name="approval", start_executor=Gate(id="gate"))


@executor(id="echo")
async def echo(item: Item, ctx: WorkflowContext) -> None:
    await ctx.yield_output(item)  # an output of a registered type, in the run's record


@register_workflow
def echo_item() -> WorkflowBuilder:
    return WorkflowBuilder(name="echo_item", start_executor=echo)


class Ticker(Executor):
    """``{"n": N, "delay": S}``: N supersteps of S seconds, one output each (something to follow live)."""

    @handler
    async def on_tick(self, tick: dict, ctx: WorkflowContext) -> None:
        await asyncio.sleep(tick.get("delay", 0))
        await ctx.yield_output(tick.get("i", 0))
        i = tick.get("i", 0) + 1
        if i < tick["n"]:
            await ctx.send_message({**tick, "i": i})


@register_workflow
def ticker() -> WorkflowBuilder:
    ticker = Ticker(id="ticker")
    return WorkflowBuilder(name="ticker", start_executor=ticker, max_supersteps=1000).add_edge(ticker, ticker)
