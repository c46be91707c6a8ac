"""Workflows of the observability tests, registered in the test process, its workers and coordinators.

``obs_flaky``: ``fetch`` fails its first ``fail`` attempts of a message (a ``RetryPolicy`` retries it), then
fans out to ``left`` and ``right``, which ``join`` collects into the output. With ``fail`` at 3 or more every
attempt fails and the run fails.
"""

from __future__ import annotations

from typing import Any

from barrierflow.engine import RetryPolicy, WorkflowBuilder, WorkflowContext, executor, register_workflow

#: attempts seen per message key, in this process (retries of a delivery run in one process)
_attempts: dict[str, int] = {}


@executor(id="fetch", retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, jitter=False))
async def fetch(job: dict, ctx: WorkflowContext) -> None:
    seen = _attempts[job["key"]] = _attempts.get(job["key"], 0) + 1
    if seen <= job["fail"]:
        raise ConnectionError(f"attempt {seen} of {job['key']} fails on purpose")
    await ctx.send_message(job["key"])


@executor(id="left")
async def left(key: str, ctx: WorkflowContext) -> None:
    await ctx.send_message(f"left:{key}")


@executor(id="right")
def right(key: str, ctx: WorkflowContext) -> None:
    ctx.send_message(f"right:{key}")


@executor(id="join")
async def join(parts: list[str], ctx: WorkflowContext) -> None:
    await ctx.yield_output(sorted(parts))


@register_workflow
def obs_flaky() -> WorkflowBuilder:
    return (
        WorkflowBuilder(name="obs_flaky", start_executor=fetch)
        .add_fan_out_edges(fetch, [left, right])
        .add_fan_in_edges([left, right], join)
    )


def job(key: str, fail: int = 0) -> dict[str, Any]:
    return {"key": key, "fail": fail}
