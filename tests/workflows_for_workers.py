"""Workflows the worker tests run, registered by name so worker processes can rebuild them.

Workers import this module through ``BARRIERFLOW_IMPORTS=tests.workflows_for_workers``. Handlers that must
leave traces outside the workflow (how often they really ran, a fuse that makes one fail) use a "side channel":
plain Redis keys under ``bftest-side:<instance id>:``, on ``BARRIERFLOW_REDIS_URL``. Those keys are test
instrumentation, not workflow effects; the workflow's effects are its outputs and states, committed once.
"""

from __future__ import annotations

import asyncio
import os
import time
from functools import cache
from typing import Any

import redis

from barrierflow.engine import (
    Case,
    Default,
    Executor,
    RetryPolicy,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowEvent,
    WorkflowExecutor,
    executor,
    handler,
    response_handler,
)
from barrierflow.engine.registry import register_workflow


@cache
def _side_client(pid: int) -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("BARRIERFLOW_REDIS_URL", "redis://localhost:6379/0"))


def side() -> redis.Redis:
    return _side_client(os.getpid())


SIDE_PREFIX = "bftest-side"


def side_key(instance_id: str, name: str) -> str:
    """A test side-channel key; all live under ``SIDE_PREFIX`` so the session deletes them at the end."""
    return f"{SIDE_PREFIX}:{instance_id}:{name}"


# -- fan-out / fan-in with shared and executor state -----------------------------------------------------------


class Split(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        ctx.set_state("text", text)
        ctx.set_state("seen", ctx.get_state("seen", 0) + 1)
        for word in text.split():
            await ctx.send_message(word)


class Shout(Executor):
    @handler
    async def on_word(self, word: str, ctx: WorkflowContext) -> None:
        count = ctx.get_executor_state(0) + 1
        ctx.set_executor_state(count)
        ctx.set_state(f"last:{self.id}", word)  # several executors write the same key family
        ctx.set_state("last", f"{self.id}:{word}")  # and one key: later delivery wins at the barrier
        await ctx.send_message(f"{word.upper()}#{count}")


class Whisper(Executor):
    @handler
    def on_word(self, word: str, ctx: WorkflowContext) -> None:  # a sync handler
        ctx.set_executor_state((ctx.get_executor_state() or []) + [word])
        ctx.set_state("last", f"{self.id}:{word}")
        ctx.send_message(word.lower())


class Join(Executor):
    @handler
    async def on_all(self, words: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(" ".join(words))
        await ctx.yield_output(ctx.get_state("text"))


@register_workflow
def bfw_fan() -> WorkflowBuilder:
    split, shout, whisper, join = Split(id="split"), Shout(id="shout"), Whisper(id="whisper"), Join(id="join")
    return (
        WorkflowBuilder(name="bfw_fan", start_executor=split)
        .add_fan_out_edges(split, [shout, whisper])
        .add_fan_in_edges([shout, whisper], join)
    )


# -- switch --------------------------------------------------------------------------------------------------


@executor(id="numbers")
async def numbers(values: list, ctx: WorkflowContext) -> None:
    for value in values:
        await ctx.send_message(value)


def _is_even(n: int) -> bool:
    return n % 2 == 0


async def _is_big(n: int) -> bool:
    return n > 100


class Label(Executor):
    @handler
    async def on_number(self, n: int, ctx: WorkflowContext) -> None:
        ctx.set_executor_state(ctx.get_executor_state(0) + n)
        await ctx.yield_output(f"{self.id}:{n}")


@register_workflow
def bfw_switch() -> WorkflowBuilder:
    even, big, odd = Label(id="even"), Label(id="big"), Label(id="odd")
    return WorkflowBuilder(name="bfw_switch", start_executor=numbers).add_switch_case_edge_group(
        numbers,
        [Case(condition=_is_even, target=even), Case(condition=_is_big, target=big), Default(target=odd)],
    )


# -- loop ----------------------------------------------------------------------------------------------------


class Counter(Executor):
    @handler
    async def on_count(self, n: int, ctx: WorkflowContext) -> None:
        ctx.set_executor_state(ctx.get_executor_state(0) + 1)
        ctx.set_state("trail", [*ctx.get_state("trail", []), n])
        if n < 6:
            await ctx.send_message(n + 1, target_id="counter")
        else:
            await ctx.send_message(f"done at {n}", target_id="finish")


@executor(id="finish")
async def finish(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(text)
    await ctx.yield_output(tuple(ctx.get_state("trail")))


@register_workflow
def bfw_loop() -> WorkflowBuilder:
    counter = Counter(id="counter")
    return (
        WorkflowBuilder(name="bfw_loop", start_executor=counter)
        .add_edge(counter, counter, condition=lambda m: isinstance(m, int))
        .add_edge(counter, finish, condition=lambda m: isinstance(m, str))
    )


# -- human in the loop ---------------------------------------------------------------------------------------


class Asker(Executor):
    @handler
    async def on_item(self, item: str, ctx: WorkflowContext) -> None:
        for part in item.split(","):
            await ctx.request_info(f"approve {part}?", bool, request_id=f"req-{part}")

    @response_handler
    async def on_answer(self, question: str, approved: bool, ctx: WorkflowContext) -> None:
        ctx.set_state(question, approved)
        await ctx.send_message(f"{question} -> {'yes' if approved else 'no'}")


@executor(id="record")
async def record(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(text)


@register_workflow
def bfw_hitl() -> WorkflowBuilder:
    asker = Asker(id="asker")
    return WorkflowBuilder(name="bfw_hitl", start_executor=asker).add_edge(asker, record)


# -- failure, then retry (a side-channel fuse makes one handler fail) ---------------------------------------


@executor(id="fork")
async def fork(text: str, ctx: WorkflowContext) -> None:
    ctx.set_state("input", text)
    await ctx.send_message(text)


class Steady(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        ctx.set_executor_state(ctx.get_executor_state(0) + 1)
        ctx.set_state("steady", text)
        await ctx.yield_output(f"steady:{text}")


class Fragile(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        ctx.set_executor_state(ctx.get_executor_state(0) + 1)
        if side().exists(side_key(ctx.instance_id, "fuse")):
            raise ValueError(f"fuse armed for {ctx.instance_id}: refusing {text!r}")
        await ctx.yield_output(f"fragile:{text}")


@register_workflow
def bfw_fuse() -> WorkflowBuilder:
    steady, fragile = Steady(id="steady"), Fragile(id="fragile")
    return WorkflowBuilder(name="bfw_fuse", start_executor=fork).add_fan_out_edges(fork, [steady, fragile])


# -- effects recorded per delivery, slow enough to kill a worker mid-superstep -------------------------------


@executor(id="spread")
async def spread(job: dict, ctx: WorkflowContext) -> None:
    ctx.set_state("delay", job["delay"])
    for i in range(job["width"]):
        await ctx.send_message(i)


class Tally(Executor):
    """Counts its deliveries in executor state and outputs each once; records every real invocation."""

    @handler
    async def on_item(self, i: int, ctx: WorkflowContext) -> None:
        channel = side()
        channel.set(side_key(ctx.instance_id, "started"), os.getpid())
        channel.hincrby(side_key(ctx.instance_id, "invocations"), f"{self.id}:{i}", 1)
        time.sleep(ctx.get_state("delay", 0))
        state = ctx.get_executor_state({"count": 0, "sum": 0})
        ctx.set_executor_state({"count": state["count"] + 1, "sum": state["sum"] + i})
        await ctx.yield_output((self.id, i))


TALLIES = [f"tally{i}" for i in range(4)]


@register_workflow
def bfw_effects() -> WorkflowBuilder:
    tallies = [Tally(id=name) for name in TALLIES]
    return WorkflowBuilder(name="bfw_effects", start_executor=spread).add_fan_out_edges(spread, tallies)


# -- a long loop, for killing the coordinator ---------------------------------------------------------------


class Stepper(Executor):
    @handler
    async def on_step(self, job: dict, ctx: WorkflowContext) -> None:
        time.sleep(job["delay"])
        total = ctx.get_state("total", 0) + job["step"]
        ctx.set_state("total", total)
        ctx.set_executor_state(ctx.get_executor_state(0) + 1)
        if job["step"] < job["steps"]:
            await ctx.send_message({**job, "step": job["step"] + 1})
        else:
            await ctx.yield_output({"total": total, "steps": ctx.get_executor_state()})


@register_workflow
def bfw_long() -> WorkflowBuilder:
    stepper = Stepper(id="stepper")
    return WorkflowBuilder(name="bfw_long", start_executor=stepper, max_supersteps=200).add_edge(
        stepper, stepper
    )


# -- a graph the coordinator will build differently (signature mismatch) ------------------------------------


@executor(id="first")
async def first(text: str, ctx: WorkflowContext) -> None:
    await ctx.send_message(text)


@executor(id="second")
async def second(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(text)


@register_workflow
def bfw_versioned() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_versioned", start_executor=first).add_edge(first, second)


def bfw_versioned_v2() -> WorkflowBuilder:
    """The same name with one more executor: what a coordinator deployed ahead of its workers would run."""

    @executor(id="third")
    async def third(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text.upper())

    return (
        WorkflowBuilder(name="bfw_versioned", start_executor=first)
        .add_edge(first, second)
        .add_edge(first, third)
    )


# -- a handler that sends what the codec cannot carry ----------------------------------------------------


class Opaque:
    """Neither a dataclass nor a model: it cannot be encoded, so it cannot leave the process."""


@executor(id="leaker")
async def leaker(text: str, ctx: WorkflowContext) -> None:
    await ctx.send_message(Opaque())


@executor(id="taker")
async def taker(thing: object, ctx: WorkflowContext) -> None:
    await ctx.yield_output(repr(thing))


@register_workflow
def bfw_unencodable() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_unencodable", start_executor=leaker).add_edge(leaker, taker)


@executor(id="yields_code")
async def yields_code(text: str, ctx: WorkflowContext) -> None:
    ctx.set_state("kept", "no")
    await ctx.yield_output(text)
    await ctx.yield_output(lambda: text)  # a function is not a value: it cannot be stored or shipped


@register_workflow
def bfw_output_lambda() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_output_lambda", start_executor=yields_code)


# -- retries and timeouts, run inside the worker ------------------------------------------------------------------


def attempt(ctx: WorkflowContext, name: str) -> int:
    """Count this handler's attempts for this instance in the side channel (attempts run in other processes)."""
    return int(side().incr(side_key(ctx.instance_id, f"attempts:{name}")))


@executor(id="retried", retry=RetryPolicy(max_attempts=4, initial_backoff=0.05, multiplier=2.0, jitter=False))
async def retried(job: dict, ctx: WorkflowContext) -> None:
    """Leaves every kind of effect, then fails on its first ``fail`` attempts; its last attempt's effects stay."""
    n = attempt(ctx, "retried")
    ctx.set_state("writer", n)
    ctx.set_executor_state({"attempt": n, "seen": (ctx.get_executor_state() or {}).get("seen", 0) + 1})
    await ctx.add_event(WorkflowEvent("progress", n))
    await ctx.yield_output(f"attempt {n}")
    await ctx.send_message(f"sent by attempt {n}")
    if n <= job["fail"]:
        raise ConnectionError(f"attempt {n} failed")


@register_workflow
def bfw_retry() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_retry", start_executor=retried).add_edge(retried, record)


@executor(id="slow_async", retry=RetryPolicy(max_attempts=2, initial_backoff=0), timeout=0.5)
async def slow_async(text: str, ctx: WorkflowContext) -> None:
    n = attempt(ctx, "slow_async")
    if n == 1:
        await asyncio.sleep(60)  # cancelled at the deadline, inside the worker
    await ctx.yield_output(f"async {text} on attempt {n}")


@executor(id="slow_sync", retry=RetryPolicy(max_attempts=2, initial_backoff=0), timeout=0.5)
def slow_sync(text: str, ctx: WorkflowContext) -> None:
    n = attempt(ctx, "slow_sync")
    if n == 1:
        time.sleep(2.0)  # abandoned at the deadline: runs on, discarded, on its handler thread
    ctx.set_state("sync-attempt", n)
    ctx.yield_output(f"sync {text} on attempt {n}")


@register_workflow
def bfw_timeouts() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_timeouts", start_executor=fork).add_fan_out_edges(
        fork, [slow_async, slow_sync]
    )


@executor(id="backs_off", retry=RetryPolicy(max_attempts=3, initial_backoff=1.5, jitter=False))
async def backs_off(item: str, ctx: WorkflowContext) -> None:
    """Fails its first attempt, then backs off for several of the coordinator's re-send deadlines."""
    n = attempt(ctx, "backs_off")
    side().rpush(side_key(ctx.instance_id, "pids"), os.getpid())
    ctx.set_state("effects", [*ctx.get_state("effects", []), item])
    ctx.set_executor_state(ctx.get_executor_state(0) + 1)
    if n == 1:
        raise ConnectionError("the first attempt fails")
    await ctx.yield_output(f"{item} after {n} attempts")


@register_workflow
def bfw_backoff() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_backoff", start_executor=backs_off)


# -- a sub-workflow, run inside the worker that handles the delivery ------------------------------------------------


class ChildAsk(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        side().rpush(side_key(ctx.instance_id, "child-pids"), os.getpid())
        ctx.set_executor_state(text)
        await ctx.request_info(f"approve {text}?", bool, request_id=f"child-{text}")

    @response_handler
    async def on_answer(self, question: str, approved: bool, ctx: WorkflowContext) -> None:
        side().rpush(side_key(ctx.instance_id, "child-pids"), os.getpid())
        await ctx.yield_output(f"{ctx.get_executor_state()}: {'approved' if approved else 'refused'}")


def child_review() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_child_review", start_executor=ChildAsk(id="child_ask"))


@register_workflow
def bfw_sub() -> WorkflowBuilder:
    review = WorkflowExecutor(child_review(), id="review")
    return (
        WorkflowBuilder(name="bfw_sub", start_executor=fork).add_edge(fork, review).add_edge(review, record)
    )


WORKFLOWS: dict[str, Any] = {
    "bfw_fan": bfw_fan,
    "bfw_switch": bfw_switch,
    "bfw_loop": bfw_loop,
    "bfw_hitl": bfw_hitl,
    "bfw_fuse": bfw_fuse,
    "bfw_effects": bfw_effects,
    "bfw_long": bfw_long,
    "bfw_retry": bfw_retry,
    "bfw_timeouts": bfw_timeouts,
    "bfw_sub": bfw_sub,
}


# -- a handler that takes as long as asked, without holding the event loop ----------------------------------


@executor(id="sleeper")
async def sleeper(seconds: float, ctx: WorkflowContext) -> None:
    await asyncio.sleep(seconds)
    await ctx.yield_output(f"slept {seconds:g} s")


@register_workflow
def bfw_sleepy() -> WorkflowBuilder:
    return WorkflowBuilder(name="bfw_sleepy", start_executor=sleeper)
