"""What travels between the coordinator and a worker: one task's payload and its result, as codec bytes.

Both are ``engine.codec`` msgpack, never pickle. A payload has two layers: an envelope of plain fields (who,
which superstep, which task, the lease) that any worker can decode, and a body with the deliveries and the
executor states, which names the application's registered types. A worker that cannot decode the body (its
modules do not register a message type) still knows where to write the refusal, so the coordinator raises it
instead of waiting for a result that will never come. The committed shared state is encoded once per
superstep and carried as bytes in every task of it.

Deliveries, outcomes and events go as field lists in declaration order rather than as registered records
(no per-record type header and field names): a superstep of 10,000 trivial deliveries ships 10,000
deliveries and returns 10,000 outcomes and 20,000 events, and their size is most of the cost. Both sides
must therefore lay records out alike: every payload and result starts with ``LAYOUT`` (a hash of the field
lists), and a mismatch is refused with a message naming both, like a graph signature mismatch. The envelope's
leading fields (through ``claim_ttl``) keep their positions in every layout so that refusal can be written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from barrierflow.engine import codec
from barrierflow.engine.dispatch import ExecutorBatch
from barrierflow.engine.errors import CheckpointDecodeError, WorkflowError
from barrierflow.engine.events import EventType, WorkflowEvent
from barrierflow.engine.messages import Delivery
from barrierflow.engine.outcome import DeliveryOutcome, FailureInfo

WIRE_VERSION = 1


@dataclass(slots=True)
class TaskEnvelope:
    """The plain part of a payload: enough to find the workflow, check the lease and write a result."""

    workflow: str
    signature: str
    instance_id: str
    run_id: str
    epoch: int
    token: str
    superstep: int
    task: int
    prefix: str
    result_ttl: float
    claim_ttl: float
    body: bytes = b""
    shared: bytes = b""
    send: int = 1  # which copy: 1 = first send, 2 = first re-send... (broker/results.py: picked up vs queued)
    layout: str = ""  # the sender's LAYOUT (set by ``decode_envelope``)


@dataclass(slots=True)
class TaskResult:
    """What a worker reports for one task.

    ``refused`` is ``(error type, message)`` when the task could not run at all (unknown workflow, graph
    signature or layout mismatch, undecodable payload, unencodable result): the coordinator raises it as that
    engine error. Otherwise ``outcomes`` and ``events`` are those of the deliveries that ran and ``failure`` is
    the handler failure that stopped the task, if any.
    """

    task: int
    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    events: list[WorkflowEvent] = field(default_factory=list)
    failure: FailureInfo | None = None
    refused: tuple[str, str] | None = None
    worker: str = ""


_ENVELOPE_FIELDS = TaskEnvelope.__slots__[:-1]
_DELIVERY_FIELDS = Delivery.__slots__
_OUTCOME_FIELDS = DeliveryOutcome.__slots__
_EVENT_FIELDS = WorkflowEvent.__slots__
_FAILURE_FIELDS = FailureInfo.__slots__  # a registered record, by field name: a new field must change LAYOUT
# The live event types travel as small ints (any other type as its string).
_EVENT_TYPES = (EventType.EXECUTOR_INVOKED, EventType.EXECUTOR_COMPLETED, EventType.EXECUTOR_FAILED)
_EVENT_CODES = {name: code for code, name in enumerate(_EVENT_TYPES)}

LAYOUT = (
    f"{WIRE_VERSION}:"
    + hashlib.sha256(
        repr(
            (
                _ENVELOPE_FIELDS,
                _DELIVERY_FIELDS,
                _OUTCOME_FIELDS,
                _EVENT_FIELDS,
                _EVENT_TYPES,
                _FAILURE_FIELDS,
            )
        ).encode()
    ).hexdigest()[:12]
)


# -- payload ---------------------------------------------------------------------------------------------------


def encode_task(envelope: TaskEnvelope) -> bytes:
    return codec.encode([LAYOUT, *(getattr(envelope, name) for name in _ENVELOPE_FIELDS)])


def decode_envelope(payload: bytes) -> TaskEnvelope:
    """The envelope; check ``envelope.layout == LAYOUT`` before ``decode_body``."""
    data = codec.decode(payload)
    leading = _ENVELOPE_FIELDS.index("claim_ttl") + 1
    if not isinstance(data, list) or len(data) < 1 + leading or not isinstance(data[0], str):
        raise CheckpointDecodeError("not a barrierflow task payload")
    envelope = TaskEnvelope(*data[1 : 1 + leading])
    envelope.layout = data[0]
    if data[0] == LAYOUT:
        envelope.body, envelope.shared, envelope.send = data[1 + leading :]
    return envelope


def layout_mismatch(theirs: str, who: str) -> WorkflowError:
    return WorkflowError(
        f"wire layout mismatch: the {who} sent layout {theirs!r}, this process speaks {LAYOUT!r}; run the same "
        "barrierflow version on the coordinator and every worker"
    )


def encode_body(batches: list[ExecutorBatch], executor_states: dict[str, Any]) -> bytes:
    return codec.encode(
        [
            [
                [
                    b.executor_id,
                    [[i, *(getattr(d, name) for name in _DELIVERY_FIELDS)] for i, d in b.deliveries],
                ]
                for b in batches
            ],
            executor_states,
        ]
    )


def decode_body(envelope: TaskEnvelope) -> tuple[list[ExecutorBatch], dict[str, Any], dict[str, Any]]:
    """``(batches, executor_states, shared_state)`` of a payload."""
    batches, executor_states = codec.decode(envelope.body)
    decoded = [
        ExecutorBatch(eid, [(d[0], Delivery(*d[1:])) for d in deliveries]) for eid, deliveries in batches
    ]
    return decoded, executor_states, codec.decode(envelope.shared)


# -- result ----------------------------------------------------------------------------------------------------


def _event_fields(event: WorkflowEvent) -> list[Any]:
    fields = [getattr(event, name) for name in _EVENT_FIELDS]
    fields[0] = _EVENT_CODES.get(event.type, event.type)
    return fields


def _event(fields: list[Any]) -> WorkflowEvent:
    if type(fields[0]) is int:
        fields[0] = _EVENT_TYPES[fields[0]]
    return WorkflowEvent(*fields)


def encode_result(result: TaskResult) -> bytes:
    return codec.encode(
        [
            LAYOUT,
            result.task,
            [[getattr(o, name) for name in _OUTCOME_FIELDS] for o in result.outcomes],
            [_event_fields(e) for e in result.events],
            result.failure,
            result.refused,
            result.worker,
        ]
    )


def decode_result(data: bytes) -> TaskResult:
    decoded = codec.decode(data)
    if decoded[0] != LAYOUT:
        raise layout_mismatch(decoded[0], "worker")
    _, task, outcomes, events, failure, refused, worker = decoded
    return TaskResult(
        task=task,
        outcomes=[DeliveryOutcome(*fields) for fields in outcomes],
        events=[_event(fields) for fields in events],
        failure=failure,
        refused=tuple(refused) if refused is not None else None,
        worker=worker,
    )
