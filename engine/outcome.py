"""What one delivery produced: the record a handler's context fills and a dispatcher returns.

Nothing in it takes effect until the barrier commits it, which is what makes a failed superstep leave no trace.
It is a plain registered dataclass so a Celery worker can send it back as msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import WorkflowEvent
from .messages import PendingRequest


@dataclass(slots=True)
class FailureInfo:
    """A handler's exception, as text that survives a process boundary."""

    executor_id: str
    error_type: str
    message: str
    traceback: str = ""


@dataclass(slots=True)
class DeliveryOutcome:
    """Effects of one delivery, in the order the handler caused them.

    ``index`` is the delivery's place in the superstep's total order; the barrier merges outcomes by it.
    ``state_writes`` are ``(key, value, deleted)``; ``executor_state`` is ``[value]`` when it was set.
    ``emitted`` holds the output, request_info and custom events (emitted only when the barrier commits).
    """

    index: int
    executor_id: str
    sent: list[tuple[Any, str | None]] = field(default_factory=list)
    emitted: list[WorkflowEvent] = field(default_factory=list)
    requests: list[PendingRequest] = field(default_factory=list)
    state_writes: list[tuple[str, Any, bool]] = field(default_factory=list)
    executor_state: list[Any] = field(default_factory=list)
    dropped: str | None = None  # why the delivery found no handler
    error: FailureInfo | None = None
