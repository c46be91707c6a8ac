"""What the run queue stores and hands out: run ids, run and instance records, events on the instance stream.

Stored values are ``engine.codec`` msgpack (never pickle); a run record is a Redis hash whose small fields are
plain strings, so the Lua scripts can read and move them (``broker/rq_*.lua``).

Run ids find their instance like checkpoint ids do: ``<instance id>@<16 hex>``. The hex part names the run's
keys inside the instance's hash slot (``P:{I}:rq:run:<hex>``) and travels with each of its events.
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from barrierflow.engine import codec, errors
from barrierflow.engine.errors import ExecutorFailedError, WorkflowError
from barrierflow.engine.events import EventType, RunResult, RunState, WorkflowEvent

from .keys import check_instance_id

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
#: Every ``RunInfo.state``; the last three are final.
RUN_STATES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
ENDED = frozenset({COMPLETED, FAILED, CANCELLED})

_HEX_LEN = 16


def new_run_id(instance_id: str) -> tuple[str, str]:
    """A fresh ``(run id, hex)`` for a run of ``instance_id``."""
    run_hex = os.urandom(_HEX_LEN // 2).hex()
    return f"{check_instance_id(instance_id)}@{run_hex}", run_hex


def split_run_id(run_id: str) -> tuple[str, str]:
    """``(instance id, hex)`` of a run id; ``LookupError`` for a string that is not one."""
    instance_id, sep, run_hex = str(run_id).rpartition("@")
    if not sep or not instance_id or len(run_hex) != _HEX_LEN or "{" in instance_id or "}" in instance_id:
        raise LookupError(f"{run_id!r} is not a run id (INSTANCE@<16 hex digits>)")
    try:
        int(run_hex, 16)
    except ValueError:
        raise LookupError(f"{run_id!r} is not a run id (INSTANCE@<16 hex digits>)") from None
    return instance_id, run_hex


@dataclass(frozen=True, slots=True)
class RunTicket:
    """What ``submit`` returns: the run and its instance (a new one unless ``instance_id=`` was given)."""

    run_id: str
    instance_id: str


@dataclass(slots=True)
class RunInfo:
    """A run's record (``RunQueue.get``). ``state`` is one of ``RUN_STATES``; ``status`` the instance's
    ``RunState`` when the run ended; ``error`` is ``{type, message, executor_id, error_type, traceback}``."""

    run_id: str
    instance_id: str
    workflow_name: str
    state: str
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: RunState | None = None
    outputs: list[Any] = field(default_factory=list)
    pending_requests: dict[str, WorkflowEvent] = field(default_factory=dict)
    checkpoint_id: str | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    coordinator: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


@dataclass(slots=True)
class InstanceInfo:
    """An instance as the queue and its latest checkpoint see it (``RunQueue.instance``).

    ``holder`` is the lease owner (``host``, ``pid``, ``run_id``, ``since``, and ``coordinator`` for a run
    queue run) or ``None`` when nobody holds the instance.
    """

    instance_id: str
    workflow_name: str | None
    status: RunState
    checkpoint_id: str | None
    superstep: int
    pending_requests: dict[str, WorkflowEvent]
    active_run_id: str | None
    queued_run_ids: list[str]
    holder: dict[str, Any] | None
    updated_at: datetime | None = None


# -- inputs and results ------------------------------------------------------------------------------------------


def encode_input(
    message: Any,
    responses: dict[str, Any] | None,
    checkpoint_id: str | None,
    submitted_by: str | None = None,
) -> bytes:
    """``[message, responses, checkpoint_id]``, and the submission span's ``traceparent`` as a fourth item
    only when tracing is on (no byte more per queued run otherwise)."""
    if submitted_by is None:
        return codec.encode([message, responses or {}, checkpoint_id])
    return codec.encode([message, responses or {}, checkpoint_id, submitted_by])


def decode_input(data: bytes) -> tuple[Any, dict[str, Any], str | None]:
    message, responses, checkpoint_id, *_ = codec.decode(data)
    return message, dict(responses), checkpoint_id


def submitted_by(data: bytes) -> str | None:
    """The ``traceparent`` of the span that submitted a run, if its input carries one."""
    decoded = codec.decode(data)
    return decoded[3] if len(decoded) > 3 and isinstance(decoded[3], str) else None


def encode_result(
    status: RunState | None,
    outputs: list[Any],
    pending: dict[str, WorkflowEvent],
    error: dict[str, Any] | None,
) -> bytes:
    """``[status, error, payload]``: the payload (outputs and requests, which may name the application's types)
    stays bytes inside, so a summary decodes in a process that does not import those types (``runs list``).
    Compact like the stream's entries: the status as its value, the requests as their events' fields."""
    requests = [_event_fields(event) for event in pending.values()]
    return codec.encode([status.value if status else None, error, codec.encode([outputs, requests])])


def error_record(exc: BaseException) -> dict[str, Any]:
    """``RunInfo.error`` of an exception: its class, message, and for a handler failure the handler's details."""
    if isinstance(exc, ExecutorFailedError):
        return {
            "type": type(exc).__name__,
            "message": exc.message,
            "executor_id": exc.executor_id,
            "error_type": exc.error_type,
            "traceback": exc.traceback,
        }
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "executor_id": getattr(exc, "executor_id", None),
        "error_type": None,
        "traceback": None,
    }


#: Builtin exceptions the engine raises before a run starts (bad input), raised again as themselves.
_BUILTIN_ERRORS = ("ValueError", "TypeError", "KeyError", "LookupError", "TimeoutError")


def error_from_record(error: dict[str, Any]) -> Exception:
    """The typed exception a failed run's ``error`` stands for (``wait`` raises it)."""
    kind, message = error.get("type") or "WorkflowError", error.get("message") or ""
    if kind == "ExecutorFailedError":
        return ExecutorFailedError(
            error.get("executor_id") or "?",
            error.get("error_type") or "Exception",
            message,
            error.get("traceback") or "",
        )
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, WorkflowError):
        return cls(message)
    if kind in _BUILTIN_ERRORS:
        return getattr(builtins, kind)(message)
    return WorkflowError(f"{kind}: {message}")


def _time(value: bytes | None) -> datetime | None:
    return None if not value else datetime.fromtimestamp(int(value) / 1000, UTC)


def _checkpoint_id(instance_id: str, get: Any) -> str | None:
    """The run's checkpoint id: ``cks`` is the suffix of an id of the instance's own (``rq_lib.lua end_run``)."""
    suffix = get(b"cks")
    if suffix:
        return f"{instance_id}@{suffix.decode()}"
    return (get(b"ckpt") or get(b"ck") or b"").decode() or None


def run_info(
    run_id: str,
    fields: dict[bytes, bytes],
    result: bytes | None = None,
    metadata: bytes | None = None,
    *,
    full: bool = True,
) -> RunInfo:
    """A ``RunInfo`` from a record hash (``HGETALL``), its result and metadata strings; without ``full``,
    outputs and requests stay empty."""
    instance_id, _ = split_run_id(run_id)
    get = fields.get
    info = RunInfo(
        run_id=run_id,
        instance_id=instance_id,
        workflow_name=(get(b"wf") or b"").decode(),
        state=(get(b"state") or b"queued").decode(),
        submitted_at=_time(get(b"sub")),
        started_at=_time(get(b"start")),
        finished_at=_time(get(b"end")),
        checkpoint_id=_checkpoint_id(instance_id, get),
        attempts=int(get(b"att") or 0),
        coordinator=(get(b"coord") or b"").decode() or None,
        metadata=codec.decode(metadata) if metadata else {},
    )
    if result:
        status, info.error, payload = codec.decode(result)
        info.status = RunState(status) if status else None
        if full:
            info.outputs, requests = codec.decode(payload)
            events = [_event_of(fields) for fields in requests]
            info.pending_requests = {event.request_id: event for event in events if event.request_id}
    return info


def run_result(info: RunInfo, events: list[WorkflowEvent]) -> RunResult:
    """The ``RunResult`` of an ended, successful run (what in-process ``run()`` would have returned)."""
    return RunResult(
        outputs=list(info.outputs),
        events=events,
        status=info.status or RunState.IDLE,
        pending_requests=dict(info.pending_requests),
        checkpoint_id=info.checkpoint_id,
        run_id=info.run_id,
    )


# -- events on the instance stream -------------------------------------------------------------------------------


#: Built-in event types are stored as their index here (a byte instead of up to 19), other types as strings.
#: Stored data depends on these positions: only ever append.
_EVENT_TYPES = (
    "started",
    "status",
    "superstep_started",
    "superstep_completed",
    "executor_invoked",
    "executor_completed",
    "executor_failed",
    "output",
    "request_info",
    "checkpoint_created",
    "warning",
    "failed",
    "run_ended",
    "executor_retry",
)
_EVENT_CODES = {kind: code for code, kind in enumerate(_EVENT_TYPES)}


#: ``RunState`` values stored as their index here (a status event's data, a ``run_ended`` event's status).
#: Stored data depends on these positions: only ever append.
_RUN_STATES = ("idle", "in_progress", "idle_with_pending_requests", "failed")
_RUN_ENDED_FIELDS = ("state", "status", "error")


def _event_fields(event: WorkflowEvent) -> list[Any]:
    """An event as a short list: built-in types as small ints, a status as a small int, a ``run_ended``
    event's data as a list, trailing empty fields left out."""
    kind, data = event.type, event.data
    if kind == EventType.STATUS and isinstance(data, RunState):
        data = _RUN_STATES.index(data.value)
    elif kind == EventType.RUN_ENDED and isinstance(data, dict) and data.keys() == set(_RUN_ENDED_FIELDS):
        status = data["status"]
        data = [data["state"], _RUN_STATES.index(status) if status in _RUN_STATES else status, data["error"]]
    fields = [_EVENT_CODES.get(kind, kind), data]
    fields += [event.executor_id, event.superstep, event.request_id, event.details]
    while fields[-1] is None:
        fields.pop()
    return fields


def _event_of(fields: list[Any], event_id: str | None = None, run_id: str | None = None) -> WorkflowEvent:
    kind, *rest = fields
    kind = _EVENT_TYPES[kind] if isinstance(kind, int) else kind
    data, executor_id, superstep, request_id, details = (*rest, None, None, None, None, None)[:5]
    if kind == EventType.STATUS and isinstance(data, int):
        data = RunState(_RUN_STATES[data])
    elif kind == EventType.RUN_ENDED and isinstance(data, list):
        state, status, error = data
        data = {
            "state": state,
            "status": _RUN_STATES[status] if isinstance(status, int) else status,
            "error": error,
        }
    return WorkflowEvent(kind, data, executor_id, superstep, request_id, details, event_id, run_id)


def encode_event(event: WorkflowEvent, instance_id: str, run_hex: str) -> bytes:
    """One stream entry: the hex id of its run (the stream is the instance's), then the event's fields, compact
    (every event of every run is kept: an idle instance's stream is much of its footprint). What the stream
    knows already is left out: a ``started`` event's data (the run and instance ids) and the instance part of
    a ``checkpoint_created`` event's checkpoint id."""
    fields = _event_fields(event)
    kind, data = event.type, event.data
    if kind == EventType.STARTED and data == {
        "run_id": f"{instance_id}@{run_hex}",
        "instance_id": instance_id,
    }:
        fields[1] = None
    elif (
        kind == EventType.CHECKPOINT_CREATED and isinstance(data, str) and data.startswith(f"{instance_id}@")
    ):
        fields[1] = data[len(instance_id) :]
    return codec.encode([run_hex, *fields])


def decode_event(instance_id: str, entry_id: bytes | str, entry: dict[bytes, bytes]) -> WorkflowEvent:
    run_hex, *fields = codec.decode(entry[b"e"])
    event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    event = _event_of(fields, event_id, f"{instance_id}@{run_hex}")
    if event.type == EventType.STARTED and event.data is None:
        event.data = {"run_id": event.run_id, "instance_id": instance_id}
    elif event.type == EventType.CHECKPOINT_CREATED and isinstance(event.data, str) and event.data[:1] == "@":
        event.data = instance_id + event.data
    return event
