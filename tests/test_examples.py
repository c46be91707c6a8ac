"""The examples the README and the CLI use: each runs embedded and does what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from barrierflow.engine import EventType, MemoryStore, RunState, register_workflow
from barrierflow.engine.errors import ExecutorFailedError
from barrierflow.engine.registry import workflow_factory
from examples.approval_flow import MAX_REVISIONS, ApprovalRequest, Decision, approval_flow
from examples.document_pipeline import Document, Report, document_pipeline
from examples.iterative_loop import Solved, guess_the_number
from examples.resilient_pipeline import ReviewRequest, resilient_pipeline
from examples.text_pipeline import text_pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_every_example_is_registered_under_its_builder_name() -> None:
    for factory in (text_pipeline, document_pipeline, approval_flow, guess_the_number, resilient_pipeline):
        name = factory().name
        assert workflow_factory(name) is factory
        assert register_workflow(factory) is factory  # registering the same factory again is harmless


async def test_text_pipeline_uppercases_then_reverses() -> None:
    result = await text_pipeline().build().run("hello")
    assert result.outputs == ["OLLEH"]
    assert result.status is RunState.IDLE
    supersteps = [e.superstep for e in result.events if e.type == EventType.SUPERSTEP_COMPLETED]
    assert supersteps == [1, 2]
    invoked = [e.executor_id for e in result.events if e.type == EventType.EXECUTOR_INVOKED]
    assert invoked == ["upper", "reverse"]


async def test_document_pipeline_fans_out_and_joins_in_source_order() -> None:
    doc = Document("Notes", "Redis stores checkpoints. Workers run supersteps. Redis keeps leases.")
    result = await document_pipeline().build().run(doc)
    assert result.status is RunState.IDLE
    [report] = result.outputs
    assert isinstance(report, Report)
    assert report.title == "Notes"
    assert (report.words, report.sentences) == (9, 3)
    assert report.keywords == ["redis", "checkpoints", "keeps", "leases", "run"]  # by count, then a-z
    assert report.summary == "Redis stores checkpoints."
    assert report.analysers == ["word_count", "keywords", "summary"]  # the fan-in list keeps source order
    by_step = {}
    for event in result.events:
        if event.type == EventType.EXECUTOR_INVOKED:
            by_step.setdefault(event.superstep, set()).add(event.executor_id)
    assert by_step == {1: {"ingest"}, 2: {"word_count", "keywords", "summary"}, 3: {"report"}}


async def test_document_pipeline_accepts_json_objects_and_plain_text() -> None:
    wf = document_pipeline().build()
    from_object = await wf.run({"title": "T", "text": "One two three."})
    assert from_object.outputs[0].title == "T"
    assert from_object.outputs[0].words == 3
    from_text = await document_pipeline().build().run("Just text here.")
    assert from_text.outputs[0].title == "untitled"


async def test_document_pipeline_rejects_an_empty_document() -> None:
    wf = document_pipeline().build()
    with pytest.raises(ExecutorFailedError, match="ingest") as info:
        await wf.run(Document("Empty", "   "))
    assert "empty" in str(info.value)
    assert wf.status is RunState.FAILED


async def test_approval_flow_waits_then_publishes_on_approval() -> None:
    store = MemoryStore()
    wf = approval_flow().build(instance_id="notes", store=store)
    first = await wf.run("release notes")
    assert first.status is RunState.IDLE_WITH_PENDING_REQUESTS
    assert first.outputs == []
    [(request_id, event)] = first.pending_requests.items()
    assert isinstance(event.data, ApprovalRequest)
    assert event.data.draft.revision == 1
    assert event.details == {"response_type": "bool"}

    # Another handle over the same store (another process, in real life) answers it.
    other = approval_flow().build(instance_id="notes", store=store)
    assert list(await other.pending_requests()) == [request_id]
    done = await other.run(responses={request_id: True})
    assert done.status is RunState.IDLE
    assert done.outputs == [Decision("release notes", True, 1, "Release notes: a first draft.")]
    assert done.pending_requests == {}


async def test_approval_flow_rejection_revises_and_asks_again() -> None:
    wf = approval_flow().build()
    result = await wf.run("docs")
    revisions = []
    while result.status is RunState.IDLE_WITH_PENDING_REQUESTS:
        [(request_id, event)] = result.pending_requests.items()
        revisions.append(event.data.draft.revision)
        result = await wf.run(responses={request_id: False})
    assert revisions == list(range(1, MAX_REVISIONS + 1))
    [decision] = result.outputs
    assert decision.published is False
    assert decision.revision == MAX_REVISIONS


async def test_approval_flow_refuses_a_wrongly_typed_answer() -> None:
    wf = approval_flow().build()
    first = await wf.run("docs")
    [request_id] = first.pending_requests
    with pytest.raises(TypeError, match="bool"):
        await wf.run(responses={request_id: "yes"})
    assert list(await wf.pending_requests()) == [request_id]


@pytest.mark.parametrize(("secret", "attempts"), [(50, 1), (37, 3), (100, 7), (1, 6)])
async def test_guess_the_number_bisects_until_the_switch_says_correct(secret: int, attempts: int) -> None:
    result = await guess_the_number().build().run(secret)
    assert result.status is RunState.IDLE
    [solved] = result.outputs
    assert isinstance(solved, Solved)
    assert (solved.secret, solved.attempts) == (secret, attempts)
    assert solved.guesses[-1] == secret
    assert len(solved.guesses) == attempts
    completed = [e.superstep for e in result.events if e.type == EventType.SUPERSTEP_COMPLETED]
    assert completed[-1] == 2 * attempts + 2  # judge and guesser per guess, then announce


async def test_guess_the_number_keeps_its_loop_state_in_checkpoints() -> None:
    wf = guess_the_number().build()
    result = await wf.run({"secret": 612, "high": 1000})
    assert result.outputs[0].secret == 612
    latest = await wf.store.latest_checkpoint(wf.instance_id)
    assert latest.executor_states["judge"]["secret"] == 612
    assert latest.executor_states["judge"]["attempts"] == result.outputs[0].attempts
    assert latest.shared_state["guesses"] == result.outputs[0].guesses


async def test_guess_the_number_rejects_a_secret_out_of_range() -> None:
    with pytest.raises(ExecutorFailedError, match=r"must lie in \[1, 100\]"):
        await guess_the_number().build().run(1000)


# The same examples through a Celery worker's code (barrierflow.testing's fixtures: fakeredis, no worker process):
# every message and state crosses the wire encoding, and the worker finds each workflow by its registered name.


async def test_document_pipeline_through_a_workers_code(barrierflow_store, barrierflow_dispatcher) -> None:
    doc = Document("Notes", "Redis stores checkpoints. Workers run supersteps. Redis keeps leases.")
    wf = document_pipeline().build(store=barrierflow_store, dispatcher=barrierflow_dispatcher)
    result = await wf.run(doc)
    assert result.outputs == (await document_pipeline().build().run(doc)).outputs
    assert list(barrierflow_dispatcher.worker.graphs) == ["document_pipeline"]  # built by the worker's side
    stored = await barrierflow_store.list_checkpoints(wf.instance_id)
    assert [cp.superstep for cp in stored] == [3, 2, 1, 0]


async def test_approval_flow_answered_from_another_handle_through_a_workers_code(
    barrierflow_store, barrierflow_dispatcher
) -> None:
    wf = approval_flow().build(
        instance_id="notes", store=barrierflow_store, dispatcher=barrierflow_dispatcher
    )
    first = await wf.run("release notes")
    [(request_id, event)] = first.pending_requests.items()
    assert isinstance(event.data, ApprovalRequest)
    other = approval_flow().build(
        instance_id="notes", store=barrierflow_store, dispatcher=barrierflow_dispatcher
    )
    rejected = await other.run(responses={request_id: False})
    [(second_id, second)] = rejected.pending_requests.items()
    assert second.data.draft.revision == 2
    done = await other.run(responses={second_id: True})
    assert done.outputs == [Decision("release notes", True, 2, done.outputs[0].text)]


async def test_guess_the_number_keeps_executor_state_across_workers_tasks(
    barrierflow_store, barrierflow_dispatcher
) -> None:
    wf = guess_the_number().build(store=barrierflow_store, dispatcher=barrierflow_dispatcher)
    [solved] = (await wf.run(37)).outputs
    assert (solved.secret, solved.attempts) == (37, 3)


async def test_resilient_pipeline_retries_the_flaky_fetch_then_the_review_sub_workflow_asks() -> None:
    store = MemoryStore()
    wf = resilient_pipeline().build(instance_id="article-1", store=store)
    paused = await wf.run("https://example.org/flaky")
    retries = [e.details for e in paused.events if e.type == EventType.EXECUTOR_RETRY]
    assert [(d["attempt"], d["error_type"]) for d in retries] == [
        (1, "ConnectionError"),
        (2, "ConnectionError"),
    ]
    assert paused.status is RunState.IDLE_WITH_PENDING_REQUESTS
    [(request_id, asked)] = paused.pending_requests.items()
    assert asked.executor_id == "review"  # the sub-workflow's question is the pipeline's pending request
    assert asked.data == ReviewRequest("Flaky", "All about flaky.")
    again = resilient_pipeline().build(instance_id="article-1", store=store)  # another handle resumes it
    done = await again.run(responses={request_id: True})
    assert done.outputs == ["published: Flaky"]
    assert done.status is RunState.IDLE


async def test_resilient_pipeline_cuts_off_a_hanging_fetch_and_gives_up_on_a_dead_service() -> None:
    slow = await resilient_pipeline().build().run("https://example.org/slow")
    [retry] = [e.details for e in slow.events if e.type == EventType.EXECUTOR_RETRY]
    assert retry["error_type"] == "TimeoutError"
    assert slow.status is RunState.IDLE_WITH_PENDING_REQUESTS
    with pytest.raises(ExecutorFailedError) as caught:
        await resilient_pipeline().build().run("https://example.org/down")
    assert (caught.value.executor_id, caught.value.attempts) == ("fetch", 4)


def test_resilient_pipeline_review_is_answered_from_another_process(
    redis_url: str, real_redis_prefix: str
) -> None:
    """Two CLI processes over Redis: the first fetches (with retries) and stops at the review; the second
    answers, and the sub-workflow execution that asked continues from the parent's checkpoint."""
    from tests.cli.conftest import json_lines, run_cli

    def cli(*args: str) -> list[dict]:
        proc = run_cli("run", "examples.resilient_pipeline:resilient_pipeline", *args)
        assert proc.returncode == 0, proc.stderr
        return json_lines(proc.stdout)

    where = ["--instance", "article-cli", "--redis", redis_url, "--prefix", real_redis_prefix]
    first = cli("--input", '"https://example.org/flaky"', *where)
    assert [r["details"]["attempt"] for r in first if r["type"] == "executor_retry"] == [1, 2]
    [pending] = [r for r in first if r["type"] == "pending_request"]
    assert pending["data"]["title"] == "Flaky"
    second = cli(*where, "--respond", f"{pending['request_id']}=false")
    assert second[-1]["status"] == "idle"
    assert second[-1]["outputs"] == ["rejected: Flaky"]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("examples.text_pipeline", "OLLEH"),
        ("examples.document_pipeline", "analysers: ['word_count', 'keywords', 'summary']"),
        ("examples.approval_flow", "published after 2 revision(s)"),
        ("examples.iterative_loop", "found 37 in 3 guesses"),
        ("examples.resilient_pipeline", "attempt 1 failed (TimeoutError)"),
    ],
)
def test_every_example_runs_as_a_script(module: str, expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
