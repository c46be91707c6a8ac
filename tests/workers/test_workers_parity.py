"""Parity: the same workflows give the same outputs, statuses, events and checkpoint lineage whether their
supersteps run in this process (``LocalDispatcher``) or on real Celery workers (``CeleryDispatcher``).

Both sides use a ``RedisStore`` on the real Redis, so the dispatcher is the only difference. Things that are
random by design (checkpoint ids, run ids, generated request ids, the instance id) are normalised; everything
else is compared as is, including per-executor live events and the committed events' order.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest

from barrierflow.engine import EventType, LocalDispatcher, WorkflowBuilder
from barrierflow.engine.errors import ExecutorFailedError
from barrierflow.workers import CeleryDispatcher
from examples.approval_flow import approval_flow
from examples.document_pipeline import Document, document_pipeline
from examples.iterative_loop import guess_the_number
from examples.resilient_pipeline import resilient_pipeline
from examples.text_pipeline import text_pipeline
from tests import workflows_for_workers as flows

LIVE = {
    EventType.EXECUTOR_INVOKED,
    EventType.EXECUTOR_COMPLETED,
    EventType.EXECUTOR_FAILED,
    EventType.EXECUTOR_RETRY,  # its delay is jittered: compared as (type, superstep) like the others
}
RANDOM_DATA = {EventType.CHECKPOINT_CREATED, EventType.STARTED}

Step = tuple[Any, ...]
SCENARIOS: dict[str, tuple[Callable[[], WorkflowBuilder], list[Step]]] = {
    "fan_out_fan_in": (flows.bfw_fan, [("run", "hello big world")]),
    "switch": (flows.bfw_switch, [("run", [1, 2, 3, 101, 200, 7])]),
    "loop": (flows.bfw_loop, [("run", 1)]),
    "human_in_the_loop": (
        flows.bfw_hitl,
        [("run", "a,b,c"), ("respond", {"req-a": True, "req-c": False}), ("respond", {"req-b": True})],
    ),
    "failure_then_retry": (flows.bfw_fuse, [("arm",), ("run", "x"), ("disarm",), ("continue",)]),
    "example_text_pipeline": (text_pipeline, [("run", "hello")]),
    "example_document_pipeline": (
        document_pipeline,
        [("run", Document("Notes", "Redis stores checkpoints. Workers run supersteps. Redis keeps leases."))],
    ),
    "example_approval_flow": (approval_flow, [("run", "docs"), ("answer_all", False), ("answer_all", True)]),
    "example_iterative_loop": (guess_the_number, [("run", 37)]),
    "retries": (flows.bfw_retry, [("run", {"fail": 2})]),
    "retries_run_out": (flows.bfw_retry, [("run", {"fail": 9})]),
    "timeouts_async_and_sync": (flows.bfw_timeouts, [("run", "t")]),
    "sub_workflow_asks_through_the_parent": (flows.bfw_sub, [("run", "s"), ("respond", {"child-s": True})]),
    "example_resilient_pipeline": (
        resilient_pipeline,
        [("run", "https://example.org/flaky"), ("answer_all", False)],
    ),
}


class Normaliser:
    """Replaces what differs by design between two runs of the same scenario with stable placeholders."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.request_ids: dict[str, str] = {}

    def request(self, request_id: str | None) -> str | None:
        if request_id is None or request_id.startswith("req-"):
            return request_id
        return self.request_ids.setdefault(request_id, f"request#{len(self.request_ids)}")

    def text(self, value: Any) -> Any:
        return value.replace(self.instance_id, "<instance>") if isinstance(value, str) else value

    def event(self, e: Any) -> tuple[Any, ...]:
        data = None if e.type in RANDOM_DATA else self.text(e.data)
        return (e.type, e.executor_id, e.superstep, self.request(e.request_id), data, e.details)


async def play(
    factory: Callable[[], WorkflowBuilder], steps: list[Step], store: Any, dispatcher: Any, instance_id: str
):
    """Run a scenario; return everything the two dispatchers must agree on."""
    wf = factory().build(instance_id=instance_id, store=store, dispatcher=dispatcher)
    norm = Normaliser(instance_id)
    transcript: list[Any] = []
    for step in steps:
        kind = step[0]
        if kind in ("arm", "disarm"):
            key = flows.side_key(instance_id, "fuse")
            flows.side().set(key, 1) if kind == "arm" else flows.side().delete(key)
            continue
        if kind == "run":
            stream = wf.stream(step[1])
        elif kind == "respond":
            stream = wf.stream(responses=step[1])
        elif kind == "answer_all":
            stream = wf.stream(responses={rid: step[1] for rid in await wf.pending_requests()})
        else:
            stream = wf.stream()
        try:
            result = await stream.result()
            outcome: tuple[Any, ...] = (
                "ok",
                result.status,
                result.outputs,
                sorted(map(norm.request, result.pending_requests)),
            )
        except ExecutorFailedError as exc:
            outcome = ("failed", exc.executor_id, exc.error_type, norm.text(exc.message), wf.status)
        events = stream.events
        live: dict[str, list[tuple[str, int]]] = {}
        for e in events:
            if e.type in LIVE:
                live.setdefault(e.executor_id, []).append((e.type, e.superstep))
        committed = [norm.event(e) for e in events if e.type not in LIVE]
        transcript.append({"step": kind, "outcome": outcome, "committed": committed, "live": live})
    checkpoints = await store.list_checkpoints(instance_id)  # newest first
    chain_ok = all(
        newer.previous_checkpoint_id == older.checkpoint_id
        for newer, older in itertools.pairwise(checkpoints)
    )
    lineage = [
        (
            cp.superstep,
            len(cp.messages),
            [(d.target_id, d.message) for d in cp.messages],
            cp.shared_state,
            cp.executor_states,
            sorted(map(norm.request, cp.pending_requests)),
            cp.fan_in_buffers,
        )
        for cp in checkpoints
    ]
    return {"transcript": transcript, "lineage": lineage, "chain": chain_ok, "status": wf.status}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_local_and_celery_dispatchers_agree(
    scenario: str, celery_workers, redis_store, real_redis_prefix: str
) -> None:
    factory, steps = SCENARIOS[scenario]
    local = await play(
        factory, steps, redis_store, LocalDispatcher(), f"{real_redis_prefix}-{scenario}-local"
    )
    dispatcher = CeleryDispatcher(store=redis_store, queue=celery_workers.queue, slots=2, redispatch_after=20)
    try:
        remote = await play(factory, steps, redis_store, dispatcher, f"{real_redis_prefix}-{scenario}-celery")
    finally:
        await dispatcher.aclose()

    assert remote["chain"] and local["chain"]
    for step_local, step_remote in zip(local["transcript"], remote["transcript"], strict=True):
        assert step_remote["outcome"] == step_local["outcome"]
        assert step_remote["committed"] == step_local["committed"]
        assert step_remote["live"] == step_local["live"]
    assert remote["lineage"] == local["lineage"]
    assert remote["status"] == local["status"]
    if scenario == "failure_then_retry":
        failed = remote["transcript"][0]["outcome"]
        assert failed[:3] == ("failed", "fragile", "ValueError")


async def test_the_design_usage_gets_redis_from_the_app_configuration(celery_workers, redis_url: str) -> None:
    """``build(store=RedisStore.from_url(url), dispatcher=CeleryDispatcher(app))``, as in docs/design.md."""
    import uuid

    from barrierflow.broker import RedisStore
    from barrierflow.workers import app
    from tests.conftest import delete_prefix
    from tests.redis_hygiene import SESSION

    instance_id = f"bftest-{SESSION}-design-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_url)  # the default prefix, like the app's default BARRIERFLOW_PREFIX
    try:
        wf = text_pipeline().build(instance_id=instance_id, store=store, dispatcher=CeleryDispatcher(app))
        result = await wf.run("hello")
        assert result.outputs == ["OLLEH"]
    finally:
        delete_prefix(redis_url, f"barrierflow:{{{instance_id}}}")
        await store.aclose()


async def test_a_dispatcher_that_cannot_see_the_stores_lease_says_so(celery_workers, redis_store) -> None:
    from barrierflow.engine import RunState
    from barrierflow.engine.errors import WorkflowError
    from barrierflow.workers import app

    wf = text_pipeline().build(
        instance_id=f"{redis_store.prefix}-elsewhere", store=redis_store, dispatcher=CeleryDispatcher(app)
    )
    with pytest.raises(WorkflowError, match=re.escape("under prefix 'barrierflow'")) as info:
        await wf.run("hello")
    assert "CeleryDispatcher(app, store=" in str(info.value)
    assert wf.status is RunState.FAILED


def test_a_distributed_workflow_is_reusable_across_event_loops(redis_store, celery_workers):
    """A sync program may call ``asyncio.run`` twice: the store and the dispatcher follow the running loop."""
    import asyncio

    dispatcher = CeleryDispatcher(store=redis_store, queue=celery_workers.queue, slots=2, redispatch_after=20)
    wf = flows.bfw_fan().build(store=redis_store, dispatcher=dispatcher)
    reference = flows.bfw_fan().build()
    first = asyncio.run(wf.run("one two"))
    second = asyncio.run(wf.run("three four five"))
    expected = [asyncio.run(reference.run(text)).outputs for text in ("one two", "three four five")]
    assert [first.outputs, second.outputs] == expected
    assert first.outputs and second.outputs
