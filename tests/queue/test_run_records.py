"""The run queue's stored forms: run ids, stream entries, results and errors, round trips without Redis."""

from __future__ import annotations

import pytest

from barrierflow.broker.run_records import (
    decode_event,
    encode_event,
    encode_result,
    error_from_record,
    error_record,
    new_run_id,
    run_info,
    split_run_id,
)
from barrierflow.engine import EventType, RunState, WorkflowEvent
from barrierflow.engine.errors import (
    ExecutorFailedError,
    GraphSignatureMismatchError,
    RunCancelledError,
    UnknownRequestError,
    WorkflowError,
)


def test_run_ids_name_their_instance() -> None:
    run_id, run_hex = new_run_id("orders@eu-1")
    assert run_id == f"orders@eu-1@{run_hex}" and len(run_hex) == 16
    assert split_run_id(run_id) == ("orders@eu-1", run_hex)
    with pytest.raises(ValueError, match="brace"):
        new_run_id("a{b}")
    for bad in ("", "x", "x@", "@0123456789abcdef", "x@0123456789abcdeX", "{x}@0123456789abcdef"):
        with pytest.raises(LookupError):
            split_run_id(bad)


EVENTS = [
    WorkflowEvent(
        EventType.STARTED, {"run_id": "inst@00000000000000aa", "instance_id": "inst"}, details={"attempt": 2}
    ),
    WorkflowEvent(EventType.STATUS, RunState.IDLE_WITH_PENDING_REQUESTS),
    WorkflowEvent(EventType.CHECKPOINT_CREATED, "inst@" + "1" * 20, superstep=3),
    WorkflowEvent(EventType.CHECKPOINT_CREATED, "custom-id", superstep=4),  # an id of the user's own
    WorkflowEvent(EventType.EXECUTOR_INVOKED, None, "upper", 3),
    WorkflowEvent(EventType.OUTPUT, {"rows": [1, 2], "ok": True}, "upper", 3),
    WorkflowEvent(EventType.REQUEST_INFO, "approve?", "asker", 3, "r1", {"response_type": "bool"}),
    WorkflowEvent("my_custom_event", [1, None], None, None, None, None),
    WorkflowEvent(EventType.RUN_ENDED, {"state": "completed", "status": "idle", "error": None}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_stream_entries_round_trip(event: WorkflowEvent) -> None:
    entry = {b"e": encode_event(event, "inst", "00000000000000aa")}
    back = decode_event("inst", b"17-3", entry)
    assert back.event_id == "17-3" and back.run_id == "inst@00000000000000aa"
    assert (back.type, back.data, back.executor_id, back.superstep, back.request_id, back.details) == (
        event.type,
        event.data,
        event.executor_id,
        event.superstep,
        event.request_id,
        event.details,
    )


def test_stream_entries_leave_out_what_the_stream_knows() -> None:
    started = encode_event(EVENTS[0], "inst", "00000000000000aa")
    assert b"instance_id" not in started
    created = encode_event(EVENTS[2], "inst", "00000000000000aa")
    assert b"inst@" not in created and b"@11111111111111111111" in created


def test_results_keep_a_summary_readable_without_the_payload_types() -> None:
    pending = {"r1": EVENTS[6]}
    result = encode_result(RunState.IDLE_WITH_PENDING_REQUESTS, ["out"], pending, None)
    fields = {b"wf": b"w", b"state": b"completed", b"att": b"1"}
    full = run_info("inst@00000000000000aa", fields, result)
    assert full.status is RunState.IDLE_WITH_PENDING_REQUESTS and full.outputs == ["out"]
    assert full.pending_requests["r1"].data == "approve?" and full.ended
    summary = run_info("inst@00000000000000aa", fields, result, full=False)
    assert summary.status is RunState.IDLE_WITH_PENDING_REQUESTS and summary.outputs == []


@pytest.mark.parametrize(
    "error",
    [
        ExecutorFailedError("fetch", "ConnectionError", "refused", "Traceback..."),
        GraphSignatureMismatchError("other graph"),
        RunCancelledError("cancelled"),
        UnknownRequestError("no request 'x'"),
        TypeError("start executor 'a' has no handler for int"),
        WorkflowError("no workflow registered as 'nope'"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_come_back_as_their_own_type(error: Exception) -> None:
    record = error_record(error)
    again = error_from_record(record)
    assert type(again) is type(error) and str(again) == str(error)
    if isinstance(error, ExecutorFailedError):
        assert record["error_type"] == "ConnectionError" and record["executor_id"] == "fetch"
        assert again.traceback == "Traceback..." and again.error_type == "ConnectionError"


def test_an_error_of_an_unknown_type_is_a_workflow_error_naming_it() -> None:
    again = error_from_record({"type": "SomethingElse", "message": "boom"})
    assert type(again) is WorkflowError and str(again) == "SomethingElse: boom"


def test_a_run_record_names_its_checkpoint_by_suffix_or_by_an_id_of_the_users_own() -> None:
    own = run_info("inst@00000000000000aa", {b"state": b"completed", b"cks": b"0123456789abcdef0123"})
    assert own.checkpoint_id == "inst@0123456789abcdef0123"
    foreign = run_info("inst@00000000000000aa", {b"state": b"completed", b"ckpt": b"release-2026"})
    assert foreign.checkpoint_id == "release-2026"
    assert run_info("inst@00000000000000aa", {b"state": b"queued"}).checkpoint_id is None
