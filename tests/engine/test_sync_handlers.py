"""Sync handlers run on handler threads, off the event loop: in order, live, bounded, stoppable."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from barrierflow.engine import (
    Executor,
    ExecutorFailedError,
    LocalDispatcher,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    handler,
)
from barrierflow.engine.handler_threads import ENV_SYNC_THREADS, HandlerThreads, default_size

from .bf_helpers import latest, of_type

TRACE: list[Any] = []


@pytest.fixture(autouse=True)
def _clear():
    TRACE.clear()
    yield
    TRACE.clear()


class Dealer(Executor):
    """Sends every item of its list to ``mixed``, in order."""

    @handler
    async def on(self, items: list, ctx: WorkflowContext) -> None:
        for item in items:
            await ctx.send_message(item)


class Mixed(Executor):
    """Sync for ints (which may fail or block), async for strings: one executor, handled one at a time."""

    @handler
    def on_int(self, n: int, ctx: WorkflowContext) -> None:
        TRACE.append(("int", n, threading.get_ident()))
        if n < 0:
            raise ValueError(f"negative: {n}")
        ctx.set_state("last", n)
        ctx.yield_output(n)

    @handler
    async def on_str(self, text: str, ctx: WorkflowContext) -> None:
        TRACE.append(("str", text, threading.get_ident()))
        await asyncio.sleep(0)
        ctx.set_state("last", text)
        await ctx.yield_output(text)


def mixed_flow(**build: Any):
    dealer, mixed = Dealer("dealer"), Mixed("mixed")
    return WorkflowBuilder(name="mixed", start_executor=dealer).add_edge(dealer, mixed).build(**build)


async def test_sync_handlers_run_off_the_loop_and_keep_the_delivery_order(store) -> None:
    wf = mixed_flow(store=store)
    loop_thread = threading.get_ident()
    result = await wf.run([1, 2, "a", 3, "b", 4, 5])
    assert result.outputs == [1, 2, "a", 3, "b", 4, 5]
    assert [(kind, value) for kind, value, _ in TRACE] == [
        ("int", 1),
        ("int", 2),
        ("str", "a"),
        ("int", 3),
        ("str", "b"),
        ("int", 4),
        ("int", 5),
    ]
    assert all((thread != loop_thread) == (kind == "int") for kind, _, thread in TRACE)
    assert (await latest(wf)).shared_state == {"last": 5}
    invoked = of_type(result.events, "executor_invoked")
    completed = of_type(result.events, "executor_completed")
    assert len([e for e in invoked if e.executor_id == "mixed"]) == 7
    assert len([e for e in completed if e.executor_id == "mixed"]) == 7


async def test_a_failing_sync_handler_ends_its_stretch_and_fails_the_superstep(store) -> None:
    wf = mixed_flow(store=store)
    with pytest.raises(ExecutorFailedError) as caught:
        await wf.run([1, -2, 3, 4])
    assert (caught.value.executor_id, caught.value.error_type) == ("mixed", "ValueError")
    assert isinstance(caught.value.__cause__, ValueError)
    assert "raise ValueError" in caught.value.traceback
    assert [value for _, value, _ in TRACE] == [1, -2]  # 3 and 4 never ran
    assert wf.status == RunState.FAILED
    assert (await latest(wf)).shared_state == {}


class Waits(Executor):
    """Blocks until the test has seen its ``executor_invoked`` event: proof that events are live."""

    def __init__(self, seen: threading.Event) -> None:
        super().__init__("waits")
        self.seen = seen

    @handler
    def on(self, item: str, ctx: WorkflowContext) -> None:
        TRACE.append(self.seen.wait(timeout=10))


async def test_events_of_a_sync_handler_stream_while_it_runs() -> None:
    seen = threading.Event()
    wf = WorkflowBuilder(name="live", start_executor=Waits(seen)).build()
    async for event in wf.stream("go"):
        if event.type == "executor_invoked":
            seen.set()
    assert TRACE == [True]  # the handler was still running when its event reached the consumer


class Blocks(Executor):
    @handler
    def on(self, seconds: float, ctx: WorkflowContext) -> None:
        TRACE.append(("start", ctx.executor_id))
        time.sleep(seconds)
        TRACE.append(("end", ctx.executor_id))


async def test_a_cancelled_run_stops_waiting_at_once_and_its_stretch_stops_after_the_current_handler() -> (
    None
):
    blocks = Blocks("blocks")
    dealer = Dealer("dealer")
    wf = WorkflowBuilder(name="stoppable", start_executor=dealer).add_edge(dealer, blocks).build()
    running = asyncio.ensure_future(wf.run([2.0] * 5))
    while ("start", "blocks") not in TRACE:
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert ("end", "blocks") not in TRACE  # the run did not wait for the sync handler to return
    assert wf.status == RunState.FAILED  # interrupted: the instance is at its last barrier
    assert [d.message for d in (await latest(wf)).messages] == [2.0] * 5
    while ("end", "blocks") not in TRACE:  # the thread runs its handler to the end (nobody can stop it)...
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert TRACE.count(("start", "blocks")) == 1  # ...but starts none of the stretch's other deliveries


class ReturnsCoroutine(Executor):
    @handler
    def on(self, text: str, ctx: WorkflowContext) -> Any:
        async def later() -> None:
            TRACE.append(threading.get_ident())
            await ctx.yield_output(text.upper())

        return later()  # a sync function returning an awaitable: awaited on the loop


async def test_a_sync_handler_that_returns_a_coroutine_has_it_awaited_on_the_loop() -> None:
    wf = WorkflowBuilder(name="returns-coro", start_executor=ReturnsCoroutine("rc")).build()
    assert (await wf.run("x")).outputs == ["X"]
    assert [threading.get_ident()] == TRACE


def test_the_pool_is_bounded_and_its_threads_are_daemons() -> None:
    pool = HandlerThreads(2)
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    daemons = []

    def job() -> None:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        daemons.append(threading.current_thread().daemon)
        time.sleep(0.05)
        with lock:
            state["now"] -= 1

    futures = [pool.submit(job) for _ in range(8)]
    for future in futures:
        future.result(timeout=10)
    assert state["most"] == 2
    assert daemons == [True] * 8
    pool.shutdown()


async def test_a_dispatchers_own_pool_bounds_its_sync_handlers() -> None:
    class Leaf(Executor):
        @handler
        def on(self, seconds: float, ctx: WorkflowContext) -> None:
            TRACE.append(threading.get_ident())
            time.sleep(seconds)

    class Fan(Executor):
        @handler
        async def on(self, seconds: float, ctx: WorkflowContext) -> None:
            await ctx.send_message(seconds)

    fan, leaves = Fan("fan"), [Leaf(f"leaf{i}") for i in range(6)]
    dispatcher = LocalDispatcher(sync_threads=3)
    wf = (
        WorkflowBuilder(name="bounded", start_executor=fan)
        .add_fan_out_edges(fan, leaves)
        .build(dispatcher=dispatcher)
    )
    await wf.run(0.05)
    assert len(set(TRACE)) <= 3 and len(TRACE) == 6
    assert dispatcher.threads.max_threads == 3


def test_the_default_pool_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SYNC_THREADS, "7")
    assert default_size() == 7
    monkeypatch.setenv(ENV_SYNC_THREADS, "zero")
    with pytest.raises(ValueError, match=ENV_SYNC_THREADS):
        default_size()
    monkeypatch.delenv(ENV_SYNC_THREADS)
    assert 1 <= default_size() <= 32
