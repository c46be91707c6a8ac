"""Events a run streams, the run states, and the result of a run."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .messages import PendingRequest


class RunState(enum.StrEnum):
    """The state of an instance as its latest checkpoint tells it (``FAILED`` until a run succeeds again)."""

    IDLE = "idle"
    IN_PROGRESS = "in_progress"
    IDLE_WITH_PENDING_REQUESTS = "idle_with_pending_requests"
    FAILED = "failed"


class Lifecycle(enum.StrEnum):
    """Whether a run holds the instance: ``IDLE -> RESERVED -> RUNNING -> IDLE``."""

    IDLE = "idle"
    RESERVED = "reserved"
    RUNNING = "running"


class EventType:
    """Names of the built-in event types (custom events may use any other string)."""

    STARTED = "started"
    STATUS = "status"
    SUPERSTEP_STARTED = "superstep_started"
    SUPERSTEP_COMPLETED = "superstep_completed"
    EXECUTOR_INVOKED = "executor_invoked"
    EXECUTOR_COMPLETED = "executor_completed"
    EXECUTOR_FAILED = "executor_failed"
    EXECUTOR_RETRY = "executor_retry"
    OUTPUT = "output"
    REQUEST_INFO = "request_info"
    CHECKPOINT_CREATED = "checkpoint_created"
    WARNING = "warning"
    FAILED = "failed"
    #: the last event of a run executed by the run queue: ``data`` is ``{"state", "status", "error"}``
    RUN_ENDED = "run_ended"


@dataclass(slots=True)
class WorkflowEvent:
    """One thing that happened in a run. ``data`` is the payload (an output, a request, a status...).

    ``event_id`` and ``run_id`` are set on events read from an instance's event stream (the run queue's):
    ``event_id`` is the stream entry id, monotonic within the instance.
    """

    type: str
    data: Any = None
    executor_id: str | None = None
    superstep: int | None = None
    request_id: str | None = None
    details: dict[str, Any] | None = None
    event_id: str | None = None
    run_id: str | None = None


@dataclass(slots=True)
class RunResult:
    """What ``await wf.run(...)`` returns: outputs in emission order, every event, and where the run stopped."""

    outputs: list[Any]
    events: list[WorkflowEvent]
    status: RunState
    pending_requests: dict[str, WorkflowEvent] = field(default_factory=dict)
    checkpoint_id: str | None = None
    run_id: str | None = None


def request_info_event(request: PendingRequest, superstep: int | None = None) -> WorkflowEvent:
    """The ``request_info`` event of a request: emitted when it is made, and listed while it is pending."""
    response_type = request.response_type
    return WorkflowEvent(
        EventType.REQUEST_INFO,
        request.data,
        executor_id=request.source_executor_id,
        superstep=superstep,
        request_id=request.request_id,
        details={"response_type": getattr(response_type, "__name__", str(response_type))},
    )
