"""What one delivery produced: the record a handler's context fills and a dispatcher returns.

Nothing in it takes effect until the barrier commits it, which is what makes a failed superstep leave no trace.
It is a plain registered dataclass so a Celery worker can send it back as msgpack.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import SerializationError
from .events import EventType, WorkflowEvent
from .messages import PendingRequest


@dataclass(slots=True)
class FailureInfo:
    """A handler's exception, as text that survives a process boundary."""

    executor_id: str
    error_type: str
    message: str
    traceback: str = ""
    attempts: int = 1  # how many attempts the delivery had (its RetryPolicy's, or 1)


@dataclass(slots=True, init=False)
class DeliveryOutcome:
    """Effects of one delivery, in the order the handler caused them.

    ``index`` is the delivery's place in the superstep's total order; the barrier merges outcomes by it.
    ``state_writes`` are ``(key, value, deleted)``; ``executor_state`` is ``[value]`` when it was set.
    ``emitted`` holds the output, request_info and custom events (emitted only when the barrier commits).
    """

    index: int
    executor_id: str
    sent: list[tuple[Any, str | None]]
    emitted: list[WorkflowEvent]
    requests: list[PendingRequest]
    state_writes: list[tuple[str, Any, bool]]
    executor_state: list[Any]
    dropped: str | None  # why the delivery found no handler
    error: FailureInfo | None

    def __init__(  # written out: one is made per delivery, and list literals beat default factories
        self,
        index: int,
        executor_id: str,
        sent: list[tuple[Any, str | None]] | None = None,
        emitted: list[WorkflowEvent] | None = None,
        requests: list[PendingRequest] | None = None,
        state_writes: list[tuple[str, Any, bool]] | None = None,
        executor_state: list[Any] | None = None,
        dropped: str | None = None,
        error: FailureInfo | None = None,
    ) -> None:
        self.index = index
        self.executor_id = executor_id
        self.sent = [] if sent is None else sent
        self.emitted = [] if emitted is None else emitted
        self.requests = [] if requests is None else requests
        self.state_writes = [] if state_writes is None else state_writes
        self.executor_state = [] if executor_state is None else executor_state
        self.dropped = dropped
        self.error = error


def _describe_event(event: WorkflowEvent) -> str:
    if event.type == EventType.OUTPUT:
        return f"the output yielded by {event.executor_id!r}"
    if event.type == EventType.REQUEST_INFO:
        return f"the data of request {event.request_id!r} of {event.executor_id!r}"
    return f"the {event.type!r} event added by {event.executor_id!r}"


def unencodable_effect(outcomes: Iterable[DeliveryOutcome]) -> SerializationError | None:
    """Slow path, once encoding failed: the first effect that cannot be encoded, named in the user's terms.

    Events (outputs, requests, custom events) are looked at first, then sent messages, then state writes, so
    in process (where the barrier checks the events before writing the checkpoint) and on a worker (where the
    whole result is encoded at once) the same mistake gets the same message.
    """
    outcomes = list(outcomes)
    suspects: list[tuple[str, Any]] = [
        (_describe_event(event), event) for outcome in outcomes for event in outcome.emitted
    ]
    for outcome in outcomes:
        sender = outcome.executor_id
        suspects += [(f"a message sent by {sender!r}", message) for message, _ in outcome.sent]
        suspects += [
            (f"shared state key {key!r} written by {sender!r}", v) for key, v, _ in outcome.state_writes
        ]
        suspects += [(f"the executor state of {sender!r}", value) for value in outcome.executor_state]
    return codec.first_unencodable(suspects)
