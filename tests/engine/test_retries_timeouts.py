"""Retries with backoff and per-attempt timeouts (DESIGN §2 "Retries, timeouts, sub-workflows"), in process.

The same workflows run through a real Celery worker in ``tests/workers/test_workers_retries.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from barrierflow.engine import (
    Executor,
    ExecutorFailedError,
    RetryPolicy,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowEvent,
    WorkflowValidationError,
    executor,
    handler,
    register_type,
)

from .bf_helpers import latest, of_type

#: attempts per (instance, executor), and what a handler should do on each attempt
ATTEMPTS: dict[tuple[str, str], int] = {}
TRACE: list[Any] = []


@pytest.fixture(autouse=True)
def _clear():
    ATTEMPTS.clear()
    TRACE.clear()
    yield
    ATTEMPTS.clear()
    TRACE.clear()


def attempt_of(ctx: WorkflowContext) -> int:
    key = (ctx.instance_id, ctx.executor_id)
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    return ATTEMPTS[key]


@register_type
@dataclass
class Job:
    fail_times: int  # the first attempts that fail
    error: str = "ConnectionError"


ERRORS = {"ConnectionError": ConnectionError, "ValueError": ValueError, "PermissionError": PermissionError}


class Flaky(Executor):
    """Leaves every kind of effect, then fails on its first ``fail_times`` attempts."""

    retry = RetryPolicy(max_attempts=4, initial_backoff=0.01, multiplier=3.0, jitter=False)

    @handler
    async def on(self, job: Job, ctx: WorkflowContext) -> None:
        attempt = attempt_of(ctx)
        await ctx.send_message(f"sent by attempt {attempt}")
        ctx.set_state("writer", attempt)
        ctx.set_state(f"only-attempt-{attempt}", True)
        ctx.set_executor_state(
            {"attempt": attempt, "seen": (ctx.get_executor_state() or {}).get("seen", 0) + 1}
        )
        await ctx.yield_output(f"output of attempt {attempt}")
        await ctx.add_event(WorkflowEvent("progress", attempt))
        await ctx.request_info(f"question of attempt {attempt}", str, request_id=f"ask-{attempt}")
        if attempt <= job.fail_times:
            raise ERRORS[job.error](f"attempt {attempt} failed")


class Sink(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        TRACE.append(text)


def flaky_flow(store=None, flaky: Executor | None = None, **builder: Any):
    flaky = flaky or Flaky("flaky")
    sink = Sink("sink")
    return (
        WorkflowBuilder(name="flaky", start_executor=flaky, **builder)
        .add_edge(flaky, sink)
        .build(store=store, instance_id="flaky-instance")
    )


async def test_a_delivery_is_retried_with_exponential_backoff_and_its_failed_attempts_leave_no_trace(store):
    wf = flaky_flow(store)
    result = await wf.run(Job(fail_times=2))
    retries = of_type(result.events, "executor_retry")
    assert [e.details for e in retries] == [
        {"attempt": 1, "error_type": "ConnectionError", "message": "attempt 1 failed", "delay": 0.01},
        {
            "attempt": 2,
            "error_type": "ConnectionError",
            "message": "attempt 2 failed",
            "delay": pytest.approx(0.03),
        },
    ]
    assert all(e.executor_id == "flaky" and e.superstep == 1 for e in retries)
    assert len([e for e in of_type(result.events, "executor_invoked") if e.executor_id == "flaky"]) == 3
    assert ATTEMPTS[("flaky-instance", "flaky")] == 3
    # only attempt 3's effects exist: one output, one event, one request, one message, its writes
    assert result.outputs == ["output of attempt 3"]
    assert [e.data for e in of_type(result.events, "progress")] == [3]
    assert list(result.pending_requests) == ["ask-3"]
    assert TRACE == ["sent by attempt 3"]
    cp = await latest(wf)
    assert cp.shared_state == {"writer": 3, "only-attempt-3": True}
    assert cp.executor_states["flaky"] == {"attempt": 3, "seen": 1}
    assert result.status == RunState.IDLE_WITH_PENDING_REQUESTS


async def test_when_attempts_run_out_the_superstep_fails_with_their_count(store):
    wf = flaky_flow(store)
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run(Job(fail_times=9))
    error = caught.value
    assert (error.executor_id, error.error_type, error.attempts) == ("flaky", "ConnectionError", 4)
    assert "after 4 attempts" in str(error)
    assert isinstance(error.__cause__, ConnectionError)
    assert ATTEMPTS[("flaky-instance", "flaky")] == 4
    assert wf.status == RunState.FAILED
    cp = await latest(wf)
    assert cp.superstep == 0 and cp.shared_state == {} and cp.pending_requests == {}  # the last barrier


async def test_an_executor_that_sets_retry_none_opts_out_of_the_builders_default(store):
    flaky = Flaky("flaky")
    flaky.retry = None  # no retries for this one, whatever the builder says
    wf = flaky_flow(store, flaky=flaky, retry=RetryPolicy(max_attempts=5))
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run(Job(fail_times=1))
    assert caught.value.attempts == 1
    assert "attempts" not in str(caught.value)
    assert ATTEMPTS[("flaky-instance", "flaky")] == 1


@pytest.mark.parametrize(
    ("policy", "error", "attempts"),
    [
        (RetryPolicy(max_attempts=3, initial_backoff=0, retry_on=(ConnectionError,)), "ValueError", 1),
        (RetryPolicy(max_attempts=3, initial_backoff=0, retry_on=ConnectionError), "ConnectionError", 3),
        (RetryPolicy(max_attempts=3, initial_backoff=0, retry_on=(OSError,)), "PermissionError", 3),
        (
            RetryPolicy(
                max_attempts=3, initial_backoff=0, retry_on=(OSError,), give_up_on=(PermissionError,)
            ),
            "PermissionError",
            1,
        ),
    ],
    ids=["not-retry_on", "retry_on-class", "retry_on-base", "give_up_on-wins"],
)
async def test_retry_on_and_give_up_on_choose_what_is_retried(policy: RetryPolicy, error: str, attempts: int):
    flaky = Flaky("flaky")
    flaky.retry = policy
    wf = flaky_flow(flaky=flaky)
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run(Job(fail_times=9, error=error))
    assert caught.value.attempts == attempts
    assert caught.value.error_type == error


async def test_backoff_has_a_maximum_and_jitter_only_shortens_it():
    flaky = Flaky("flaky")
    flaky.retry = RetryPolicy(
        max_attempts=5, initial_backoff=0.02, multiplier=10.0, max_backoff=0.05, jitter=True
    )
    wf = flaky_flow(flaky=flaky)
    started = time.monotonic()
    result = await wf.run(Job(fail_times=4))
    elapsed = time.monotonic() - started
    delays = [e.details["delay"] for e in of_type(result.events, "executor_retry")]
    ceilings = [0.02, 0.05, 0.05, 0.05]  # min(max_backoff, 0.02 * 10 ** (n - 1))
    assert len(delays) == 4
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert elapsed >= sum(delays)  # the run really waited


def test_the_delay_formula_and_the_filters() -> None:
    policy = RetryPolicy(max_attempts=6, initial_backoff=0.2, max_backoff=1.0, multiplier=2.0, jitter=False)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [policy.delay_after(n, OSError()) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.0, 1.0, None]
    jittered = RetryPolicy(initial_backoff=1.0, jitter=True)
    assert all(0.5 <= jittered.delay_after(1, ValueError()) <= 1.0 for _ in range(200))  # type: ignore[operator]
    assert RetryPolicy(give_up_on=(KeyError,)).delay_after(1, KeyError()) is None
    assert RetryPolicy().retries(RuntimeError()) and not RetryPolicy().retries(KeyboardInterrupt())


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"initial_backoff": -1},
        {"max_backoff": float("nan")},
        {"multiplier": 0.5},
    ],
)
def test_a_bad_retry_policy_is_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**arguments)


def test_retry_on_takes_exception_classes_only() -> None:
    with pytest.raises(TypeError, match="exception classes"):
        RetryPolicy(retry_on=("ConnectionError",))  # type: ignore[arg-type]


def test_bad_retry_or_timeout_settings_are_named_at_build_time() -> None:
    flaky = Flaky("flaky")
    flaky.timeout = -1  # type: ignore[assignment]
    flaky.retry = 3  # type: ignore[assignment]
    with pytest.raises(WorkflowValidationError) as caught:
        WorkflowBuilder(name="bad", start_executor=flaky, timeout=0).build()
    message = str(caught.value)
    assert "executor 'flaky': retry must be a RetryPolicy" in message
    assert "workflow 'bad': timeout must be positive seconds" in message


async def test_builder_defaults_apply_to_executors_that_set_nothing():
    @executor(id="plain")
    async def plain(job: Job, ctx: WorkflowContext) -> None:
        if attempt_of(ctx) <= job.fail_times:
            raise ConnectionError("down")
        await ctx.yield_output("done")

    wf = WorkflowBuilder(
        name="defaults", start_executor=plain, retry=RetryPolicy(max_attempts=3, initial_backoff=0)
    ).build()
    assert (await wf.run(Job(fail_times=2))).outputs == ["done"]
    assert wf.graph.policies["plain"].retry.max_attempts == 3  # type: ignore[union-attr]


async def test_the_function_executor_takes_retry_and_timeout():
    @executor(id="score", retry=RetryPolicy(max_attempts=2, initial_backoff=0), timeout=5.0)
    async def score(job: Job, ctx: WorkflowContext) -> None:
        if attempt_of(ctx) <= job.fail_times:
            raise ValueError("flaky model")
        await ctx.yield_output("scored")

    wf = WorkflowBuilder(name="fn", start_executor=score, timeout=60.0).build()
    assert wf.graph.policies["score"].timeout == 5.0  # its own, not the builder's
    assert (await wf.run(Job(fail_times=1))).outputs == ["scored"]


# -- timeouts ---------------------------------------------------------------------------------------------------


class SlowFirst(Executor):
    """Async: the first attempt hangs far past the timeout; later attempts are quick."""

    timeout = 0.3
    retry = RetryPolicy(max_attempts=3, initial_backoff=0)

    @handler
    async def on(self, job: Job, ctx: WorkflowContext) -> None:
        attempt = attempt_of(ctx)
        ctx.set_state("attempt", attempt)
        try:
            if attempt == 1:
                await asyncio.sleep(30)
        finally:
            TRACE.append(("finally", attempt))
        await ctx.yield_output(f"attempt {attempt}")


async def test_an_async_attempt_past_its_timeout_is_cancelled_and_retried():
    wf = WorkflowBuilder(name="slow", start_executor=SlowFirst("slow")).build()
    started = time.monotonic()
    result = await wf.run(Job(fail_times=0))
    assert time.monotonic() - started < 10  # not the 30 s of the first attempt
    assert result.outputs == ["attempt 2"]
    [retry] = of_type(result.events, "executor_retry")
    assert retry.details["error_type"] == "TimeoutError"  # type: ignore[index]
    assert "did not finish within its timeout of 0.3 s" in retry.details["message"]  # type: ignore[index]
    assert TRACE == [("finally", 1), ("finally", 2)]  # the cancelled attempt's finally block ran
    assert (await latest(wf)).shared_state == {"attempt": 2}


async def test_a_timeout_without_retries_fails_the_superstep_with_timeout_error():
    slow = SlowFirst("slow")
    slow.retry = None
    wf = WorkflowBuilder(name="slow", start_executor=slow).build()
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run(Job(fail_times=0))
    assert (caught.value.error_type, caught.value.attempts) == ("TimeoutError", 1)


async def test_the_timeout_is_per_attempt_not_per_delivery():
    @executor(id="steady", retry=RetryPolicy(max_attempts=3, initial_backoff=0), timeout=0.5)
    async def steady(job: Job, ctx: WorkflowContext) -> None:
        attempt = attempt_of(ctx)
        await asyncio.sleep(0.3)  # every attempt within 0.5 s, all of them together past it
        if attempt <= job.fail_times:
            raise ConnectionError("again")
        await ctx.yield_output(attempt)

    wf = WorkflowBuilder(name="steady", start_executor=steady).build()
    result = await wf.run(Job(fail_times=2))
    assert result.outputs == [3]
    assert [e.details["error_type"] for e in of_type(result.events, "executor_retry")] == [
        "ConnectionError"
    ] * 2  # type: ignore[index]


async def test_a_handler_that_raises_timeout_error_itself_is_not_confused_with_the_deadline():
    @executor(id="own", timeout=30.0)
    async def own(job: Job, ctx: WorkflowContext) -> None:
        await asyncio.sleep(0)
        raise TimeoutError("the remote API timed out")

    wf = WorkflowBuilder(name="own", start_executor=own).build()
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run(Job(fail_times=0))
    assert caught.value.message == "the remote API timed out"


class SyncSlowFirst(Executor):
    """Sync: the first attempt blocks its thread past the timeout, then still tries to leave effects."""

    timeout = 0.3
    retry = RetryPolicy(max_attempts=2, initial_backoff=0)

    @handler
    def on(self, job: Job, ctx: WorkflowContext) -> None:
        attempt = attempt_of(ctx)
        if attempt == 1:
            time.sleep(1.0)
        ctx.set_state("attempt", attempt)
        ctx.set_executor_state(attempt)
        ctx.yield_output(f"attempt {attempt}")
        TRACE.append(("done", attempt))


async def test_a_sync_attempt_past_its_timeout_fails_at_once_and_its_late_effects_are_dropped():
    wf = WorkflowBuilder(name="sync-slow", start_executor=SyncSlowFirst("sync")).build()
    result = await wf.run(Job(fail_times=0))
    assert result.outputs == ["attempt 2"]
    assert TRACE == [("done", 2)]  # the retry finished while attempt 1 still blocked its thread
    [retry] = of_type(result.events, "executor_retry")
    assert retry.details["error_type"] == "TimeoutError"  # type: ignore[index]
    while ("done", 1) not in TRACE:  # attempt 1 runs on to its end in the background...
        await asyncio.sleep(0.05)
    cp = await latest(wf)
    assert cp.shared_state == {"attempt": 2}  # ...and nothing it did reaches the state
    assert cp.executor_states == {"sync": 2}


async def test_retries_wait_inside_the_superstep_while_other_executors_run():
    class Quick(Executor):
        @handler
        async def on(self, job: Job, ctx: WorkflowContext) -> None:
            TRACE.append("quick")

    class Fork(Executor):
        @handler
        async def on(self, job: Job, ctx: WorkflowContext) -> None:
            await ctx.send_message(job)

    flaky, quick, fork = Flaky("flaky"), Quick("quick"), Fork("fork")
    flaky.retry = RetryPolicy(max_attempts=2, initial_backoff=0.2, jitter=False)
    wf = WorkflowBuilder(name="parallel", start_executor=fork).add_fan_out_edges(fork, [flaky, quick]).build()
    order = []
    async for event in wf.stream(Job(fail_times=1)):
        if event.type in ("executor_retry", "executor_completed", "superstep_completed"):
            order.append((event.type, event.executor_id))
    step_two = order[order.index(("superstep_completed", None)) + 1 :]
    assert step_two == [
        ("executor_retry", "flaky"),
        ("executor_completed", "quick"),  # the other executor finished during the backoff
        ("executor_completed", "flaky"),
        ("superstep_completed", None),  # and the barrier waited for the retry
    ]


async def test_a_retry_sees_the_writes_of_the_executors_earlier_deliveries_in_the_superstep_only():
    @executor(id="dealer")
    async def dealer(items: list, ctx: WorkflowContext) -> None:
        for item in items:
            await ctx.send_message(item)

    @executor(id="keeper", retry=RetryPolicy(max_attempts=2, initial_backoff=0))
    async def keeper(item: str, ctx: WorkflowContext) -> None:
        TRACE.append((item, ctx.get_state("last"), ctx.get_executor_state()))
        ctx.set_state("last", item)
        ctx.set_executor_state([*(ctx.get_executor_state() or []), item])
        if item == "second" and attempt_of(ctx) == 1:
            ctx.delete_state("last")
            raise ConnectionError("once")

    wf = WorkflowBuilder(name="keeper", start_executor=dealer).add_edge(dealer, keeper).build()
    await wf.run(["first", "second"])
    assert TRACE == [
        ("first", None, None),
        ("second", "first", ["first"]),  # the failed attempt...
        (
            "second",
            "first",
            ["first"],
        ),  # ...and its retry see delivery one's writes, not the failed attempt's
    ]
    cp = await latest(wf)
    assert cp.shared_state == {"last": "second"}
    assert cp.executor_states == {"keeper": ["first", "second"]}
