"""How a checkpoint is laid out in a store: a head, and a keyframe shared by many heads.

Why not one blob per checkpoint? Shared and executor state would then be rewritten in full at every barrier, so
a superstep that touched one of 1,000 executors would still write all 1,000. Instead (like a video codec):

- a **keyframe** holds the full shared and executor state at some checkpoint;
- every **head** names its keyframe and carries the *cumulative* delta since it (sets and deletes), plus the
  small per-barrier parts (queued messages, fan-in buffers, pending requests, lineage).

A head therefore depends on exactly one keyframe, never on other heads, so retention can delete any head; a
keyframe lives while some head names it. A new keyframe is cut when the cumulative delta gets large relative to
the state (``needs_keyframe``), which keeps the per-superstep cost bounded by what changed, amortised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack

from . import codec
from .checkpoint import CHECKPOINT_VERSION, Checkpoint
from .errors import CheckpointDecodeError
from .messages import Delivery, PendingRequest

#: A keyframe is cut once the cumulative delta holds this many entries, whatever the state size.
MAX_DELTA_ENTRIES = 64


@dataclass(slots=True)
class StateDelta:
    """Changes to one key-value state since a keyframe: ``sets`` win over the keyframe, ``deletes`` remove."""

    sets: dict[Any, Any] = field(default_factory=dict)
    deletes: set[Any] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.sets) + len(self.deletes)

    def set(self, key: Any, value: Any) -> None:
        """Record a write (a later write or delete of the same key replaces it)."""
        self.sets[key] = value
        self.deletes.discard(key)

    def delete(self, key: Any) -> None:
        self.sets.pop(key, None)
        self.deletes.add(key)

    def merged(self, sets: dict[Any, Any], deletes: set[Any] | frozenset[Any] = frozenset()) -> StateDelta:
        """A new delta with these later changes applied on top (self is left as it is; returned if no change)."""
        if not sets and not deletes:
            return self
        new_sets = {**self.sets, **sets}
        new_deletes = (self.deletes - sets.keys()) | deletes
        for key in deletes:
            new_sets.pop(key, None)
        return StateDelta(new_sets, new_deletes)

    def apply_in_place(self, target: dict[Any, Any]) -> None:
        for key in self.deletes:
            target.pop(key, None)
        target.update(self.sets)

    def apply_to(self, base: dict[Any, Any]) -> dict[Any, Any]:
        """A copy of ``base`` with this delta applied."""
        result = dict(base)
        self.apply_in_place(result)
        return result


@dataclass(slots=True)  # not frozen: built every superstep, and frozen __init__ costs a setattr per field
class CheckpointRecord:
    """What a store writes for one checkpoint: the encoded head, and the keyframe when this head cuts one.

    ``events`` are the events this checkpoint commits (outputs, requests, ``checkpoint_created``...): a store
    that journals runs (the run queue's) writes them in the same atomic step; others ignore them.
    """

    checkpoint_id: str
    instance_id: str
    keyframe_id: str
    head: bytes
    keyframe: bytes | None = None
    events: list[Any] | None = None


def needs_keyframe(delta_entries: int, state_entries: int) -> bool:
    """Cut a keyframe when the delta is large in absolute terms or relative to the state it describes."""
    return delta_entries > MAX_DELTA_ENTRIES or delta_entries * 2 > max(state_entries, 8)


@dataclass(slots=True)
class HeadFields:
    """The per-barrier part of a checkpoint, as ``commit`` knows it (no copy of the state dicts)."""

    checkpoint_id: str
    instance_id: str
    workflow_name: str
    graph_signature: str
    previous_checkpoint_id: str | None
    superstep: int
    messages: list[Delivery]
    fan_in_buffers: dict[str, dict[str, list[Any]]]
    pending_requests: dict[str, Any]
    run_id: str | None
    epoch: int
    created_at: float  # POSIX seconds
    metadata: dict[str, Any]
    version: int = CHECKPOINT_VERSION


@codec.gc_paused
def encode_record(
    fields: HeadFields,
    *,
    keyframe_id: str,
    shared_delta: StateDelta,
    executor_delta: StateDelta,
    keyframe_state: tuple[dict[str, Any], dict[str, Any]] | None,
) -> CheckpointRecord:
    """Encode a head (and the keyframe, when ``keyframe_state`` (shared, executors) is given).

    A head that cuts a keyframe has ``keyframe_id == fields.checkpoint_id`` and empty deltas.
    """
    head = {
        "v": fields.version,
        "id": fields.checkpoint_id,
        "instance": fields.instance_id,
        "name": fields.workflow_name,
        "sig": fields.graph_signature,
        "prev": fields.previous_checkpoint_id,
        "step": fields.superstep,
        "messages": [[d.target_id, d.message, list(d.source_ids), d.request] for d in fields.messages],
        "fan_in": fields.fan_in_buffers,
        "pending": fields.pending_requests,
        "run": fields.run_id,
        "epoch": fields.epoch,
        "at": fields.created_at,
        "meta": fields.metadata,
        "kf": keyframe_id,
        "shared": [shared_delta.sets, list(shared_delta.deletes)],
        "exec": [executor_delta.sets, list(executor_delta.deletes)],
    }
    keyframe = None
    if keyframe_state is not None:
        keyframe = codec.encode({"shared": keyframe_state[0], "exec": keyframe_state[1]})
    return CheckpointRecord(
        fields.checkpoint_id, fields.instance_id, keyframe_id, codec.encode(head), keyframe
    )


def head_fields(cp: Checkpoint) -> HeadFields:
    """The head part of a complete ``Checkpoint``."""
    return HeadFields(
        checkpoint_id=cp.checkpoint_id,
        instance_id=cp.instance_id,
        workflow_name=cp.workflow_name,
        graph_signature=cp.graph_signature,
        previous_checkpoint_id=cp.previous_checkpoint_id,
        superstep=cp.superstep,
        messages=cp.messages,
        fan_in_buffers=cp.fan_in_buffers,
        pending_requests=cp.pending_requests,
        run_id=cp.run_id,
        epoch=cp.epoch,
        created_at=cp.created_at.timestamp(),
        metadata=cp.metadata,
        version=cp.version,
    )


def encode_full(cp: Checkpoint) -> CheckpointRecord:
    """Encode a complete ``Checkpoint`` (as a user may build one) as its own keyframe."""
    return encode_record(
        head_fields(cp),
        keyframe_id=cp.checkpoint_id,
        shared_delta=StateDelta(),
        executor_delta=StateDelta(),
        keyframe_state=(cp.shared_state, cp.executor_states),
    )


@dataclass(slots=True)
class DecodedCheckpoint:
    """A loaded checkpoint plus what a run needs to continue writing deltas against its keyframe."""

    checkpoint: Checkpoint
    keyframe_id: str
    shared_delta: StateDelta
    executor_delta: StateDelta


@codec.gc_paused
def decode_record(head: bytes, keyframe: bytes | None) -> DecodedCheckpoint:
    """Materialise a checkpoint from its head and keyframe bytes.

    Every way stored bytes can be wrong ends in ``CheckpointDecodeError``: bytes that are not msgpack, types
    that are not registered, and well-formed data of the wrong shape (a missing field, ``pending=[1]``, a
    timestamp outside what ``datetime`` holds). The shape is checked here, at load, so a bad head never
    becomes a ``Checkpoint`` that fails later, somewhere else, with an untyped error.
    """
    fields = codec.decode(head)
    if not isinstance(fields, dict):
        raise CheckpointDecodeError(f"checkpoint head is a {type(fields).__name__}, not a record")
    name = fields.get("id")
    where = f"checkpoint {name!r}" if isinstance(name, str) else "checkpoint head"
    kf = codec.decode(keyframe) if keyframe is not None else None
    if not isinstance(kf, dict):
        raise CheckpointDecodeError(f"{where}: its keyframe {fields.get('kf')!r} is missing or malformed")
    try:
        return _materialise(fields, kf)
    except _Malformed as bad:
        raise CheckpointDecodeError(f"{where} is malformed: {bad}") from None


class _Malformed(Exception):
    """A field of a stored head or keyframe that does not have the shape this version writes."""


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in record:
        raise _Malformed(f"field {key!r} is missing")
    value = record[key]
    if not isinstance(value, kind) or (type(value) is bool and kind is int):
        raise _Malformed(f"field {key!r} is a {type(value).__name__}, not {_kind_names(kind)}")
    return value


def _kind_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def _delta(record: dict[str, Any], key: str) -> StateDelta:
    pair = _field(record, key, list)
    if len(pair) != 2 or not isinstance(pair[0], dict) or not isinstance(pair[1], list):
        raise _Malformed(f"field {key!r} is not [sets, deletes]")
    if not all(type(k) is str for k in pair[1]):
        raise _Malformed(f"field {key!r} deletes a key that is not a string")
    return StateDelta(dict(pair[0]), set(pair[1]))


def _request(value: Any, where: str) -> PendingRequest:
    if (
        type(value) is not PendingRequest
        or type(value.request_id) is not str
        or type(value.source_executor_id) is not str
        or not (isinstance(value.response_type, type) or value.response_type is Any)
    ):
        raise _Malformed(f"{where} is not a well-formed pending request")
    return value


def _delivery(item: Any) -> Delivery:
    if type(item) is not list or len(item) != 4:
        raise _Malformed("a queued message is not [target, message, sources, request]")
    target, message, sources, request = item
    if type(target) is not str or type(sources) is not list or not all(type(s) is str for s in sources):
        raise _Malformed("a queued message has a malformed target or sources")
    if request is not None:
        request = _request(request, f"the request of a message for {target!r}")
    return Delivery(target, message, tuple(sources), request)


def _states(kf: dict[str, Any], key: str) -> dict[str, Any]:
    states = kf.get(key)
    if type(states) is not dict:
        raise _Malformed(f"its keyframe has no {key!r} state")
    return states


def _materialise(fields: dict[str, Any], kf: dict[str, Any]) -> DecodedCheckpoint:
    version = _field(fields, "v", int)
    if version != CHECKPOINT_VERSION:
        raise _Malformed(f"it has format version {version}; this barrierflow reads {CHECKPOINT_VERSION}")
    checkpoint_id = _field(fields, "id", str)
    shared_delta, executor_delta = _delta(fields, "shared"), _delta(fields, "exec")
    at = _field(fields, "at", (int, float))
    try:
        created_at = datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError) as exc:  # at=1e300, 1e18, nan
        raise _Malformed(f"field 'at' ({at!r}) is not a time: {exc}") from None
    fan_in = _field(fields, "fan_in", dict)
    for target, buffer in fan_in.items():
        if type(buffer) is not dict or not all(type(v) is list for v in buffer.values()):
            raise _Malformed(f"the fan-in buffer of {target!r} is not {{source: [messages]}}")
    pending = _field(fields, "pending", dict)
    for request_id, request in pending.items():
        _request(request, f"pending request {request_id!r}")
    cp = Checkpoint(
        checkpoint_id=checkpoint_id,
        instance_id=_field(fields, "instance", str),
        workflow_name=_field(fields, "name", str),
        graph_signature=_field(fields, "sig", str),
        previous_checkpoint_id=_field(fields, "prev", (str, type(None))),
        superstep=_field(fields, "step", int),
        messages=[_delivery(item) for item in _field(fields, "messages", list)],
        shared_state=shared_delta.apply_to(_states(kf, "shared")),
        executor_states=executor_delta.apply_to(_states(kf, "exec")),
        fan_in_buffers=fan_in,
        pending_requests=pending,
        run_id=_field(fields, "run", (str, type(None))),
        epoch=_field(fields, "epoch", int),
        created_at=created_at,
        metadata=_field(fields, "meta", dict),
        version=version,
    )
    return DecodedCheckpoint(cp, _field(fields, "kf", str), shared_delta, executor_delta)


@dataclass(slots=True)
class CheckpointSummary:
    """What a checkpoint's head says about it without decoding one application value.

    For tools that inspect instances (``barrierflow status``, ``checkpoints list``) in a process that does not
    import the workflow's modules: queued messages and pending requests are counted and named, never decoded.
    """

    checkpoint_id: str
    superstep: int
    created_at: datetime
    queued_messages: int
    pending_request_ids: list[str]
    instance_id: str
    workflow_name: str
    graph_signature: str
    previous_checkpoint_id: str | None
    run_id: str | None
    epoch: int

    @classmethod
    def of(cls, cp: Checkpoint) -> CheckpointSummary:
        return cls(
            checkpoint_id=cp.checkpoint_id,
            superstep=cp.superstep,
            created_at=cp.created_at,
            queued_messages=len(cp.messages),
            pending_request_ids=sorted(cp.pending_requests),
            instance_id=cp.instance_id,
            workflow_name=cp.workflow_name,
            graph_signature=cp.graph_signature,
            previous_checkpoint_id=cp.previous_checkpoint_id,
            run_id=cp.run_id,
            epoch=cp.epoch,
        )


def summarize_head(head: bytes) -> CheckpointSummary:
    """The plain fields of a head. Application values stay opaque msgpack ext data: no registered type needed.

    Raises ``CheckpointDecodeError`` when the head itself is malformed.
    """
    try:
        fields = msgpack.unpackb(head, raw=False, strict_map_key=False)  # no ext_hook: ext values stay inert
        summary = CheckpointSummary(
            checkpoint_id=_plain(fields["id"], str),
            instance_id=_plain(fields["instance"], str),
            workflow_name=_plain(fields["name"], str),
            graph_signature=_plain(fields["sig"], str),
            previous_checkpoint_id=_plain(fields["prev"], str, optional=True),
            superstep=_plain(fields["step"], int),
            run_id=_plain(fields["run"], str, optional=True),
            epoch=_plain(fields["epoch"], int),
            created_at=datetime.fromtimestamp(_plain(fields["at"], float | int), UTC),
            queued_messages=len(fields["messages"]),
            pending_request_ids=sorted(_plain(rid, str) for rid in fields["pending"]),
        )
    except CheckpointDecodeError:
        raise
    except Exception as exc:
        raise CheckpointDecodeError(f"checkpoint head is malformed: {type(exc).__name__}: {exc}") from exc
    return summary


def _plain(value: Any, kind: Any, *, optional: bool = False) -> Any:
    if (value is None and optional) or isinstance(value, kind):
        return value
    raise CheckpointDecodeError(f"checkpoint head holds a {type(value).__name__} where a plain value belongs")
