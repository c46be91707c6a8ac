"""The JSON records of runs, instances, events and pending requests, as the CLI and the HTTP API show them.

One place, so ``barrierflow runs show --json`` and ``GET /api/runs/{id}`` never drift apart. Payloads go
through ``json_io.jsonable``; a ``RunState`` is its lower-case value (``"idle"``); times are ISO 8601 strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from barrierflow.engine.events import WorkflowEvent
from barrierflow.json_io import jsonable

#: The fields of an event record, in order (``None`` ones are left out).
EVENT_FIELDS = ("data", "executor_id", "superstep", "request_id", "details", "run_id", "event_id")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def event_record(event: WorkflowEvent) -> dict[str, Any]:
    """``{type, data, executor_id, superstep, request_id, details, run_id, event_id}`` (set fields only)."""
    record: dict[str, Any] = {"type": event.type}
    for name in EVENT_FIELDS:
        value = getattr(event, name)
        if value is not None:
            record[name] = jsonable(value)
    return record


def request_record(event: WorkflowEvent) -> dict[str, Any]:
    """A pending request: what was asked, by which executor, and the type of answer it takes."""
    return {
        "request_id": event.request_id,
        "executor_id": event.executor_id,
        "data": jsonable(event.data),
        "response_type": (event.details or {}).get("response_type"),
    }


def run_record(info: Any) -> dict[str, Any]:
    """A ``RunInfo`` (``broker.run_records``) as JSON: its fields, pending requests as ``request_record``s."""
    return {
        "run_id": info.run_id,
        "instance_id": info.instance_id,
        "workflow_name": info.workflow_name,
        "state": info.state,
        "status": info.status.value if info.status else None,
        "submitted_at": iso(info.submitted_at),
        "started_at": iso(info.started_at),
        "finished_at": iso(info.finished_at),
        "attempts": info.attempts,
        "coordinator": info.coordinator,
        "checkpoint_id": info.checkpoint_id,
        "outputs": jsonable(info.outputs),
        "pending_requests": {rid: request_record(event) for rid, event in info.pending_requests.items()},
        "error": jsonable(info.error),
        "metadata": jsonable(info.metadata),
    }


def instance_record(info: Any) -> dict[str, Any]:
    """An ``InstanceInfo`` as JSON."""
    return {
        "instance_id": info.instance_id,
        "workflow_name": info.workflow_name,
        "status": info.status.value,
        "checkpoint_id": info.checkpoint_id,
        "superstep": info.superstep,
        "pending_requests": {rid: request_record(event) for rid, event in info.pending_requests.items()},
        "active_run_id": info.active_run_id,
        "queued_run_ids": list(info.queued_run_ids),
        "holder": jsonable(info.holder),
        "updated_at": iso(info.updated_at),
    }
