"""Workflows the run queue tests submit; coordinator processes import this module (``--import``).

``q_steps`` runs one superstep per step, each waiting ``delay`` seconds (asynchronously, so a cancel or a
shutdown can abandon it), and records every real execution of a step in a side-channel hash
(``bftest-side:<instance>:executions``) so tests can tell "ran at least once" from "committed once".
``q_poison`` SIGKILLs the process that runs it, when that process allows it (``BFTEST_POISON=1``: only the
coordinator processes the tests start, never the pytest process).
"""

from __future__ import annotations

import asyncio
import os
import signal

from barrierflow.engine import Executor, WorkflowBuilder, WorkflowContext, handler
from barrierflow.engine.registry import register_workflow
from tests.workflows_for_workers import side, side_key


class Step(Executor):
    @handler
    async def on_job(self, job: dict, ctx: WorkflowContext) -> None:
        await asyncio.to_thread(side().hincrby, side_key(ctx.instance_id, "executions"), str(job["step"]), 1)
        await asyncio.sleep(job["delay"])
        total = ctx.get_state("total", 0) + job["step"]
        ctx.set_state("total", total)
        await ctx.yield_output({"step": job["step"], "total": total})
        if job["step"] < job["steps"]:
            await ctx.send_message({**job, "step": job["step"] + 1})


@register_workflow
def q_steps() -> WorkflowBuilder:
    step = Step(id="step")
    return WorkflowBuilder(name="q_steps", start_executor=step, max_supersteps=500).add_edge(step, step)


class Append(Executor):
    """Each run appends its input to the instance's history, after a pause: runs of one instance in order."""

    @handler
    async def on_item(self, item: dict, ctx: WorkflowContext) -> None:
        await asyncio.sleep(item.get("delay", 0))
        history = [*ctx.get_state("history", []), item["n"]]
        ctx.set_state("history", history)
        await ctx.yield_output(history)


@register_workflow
def q_append() -> WorkflowBuilder:
    return WorkflowBuilder(name="q_append", start_executor=Append(id="append"))


class Poison(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        side().hincrby(side_key(ctx.instance_id, "poison"), "runs", 1)
        if os.environ.get("BFTEST_POISON") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        await ctx.yield_output(text)


@register_workflow
def q_poison() -> WorkflowBuilder:
    return WorkflowBuilder(name="q_poison", start_executor=Poison(id="poison"))
