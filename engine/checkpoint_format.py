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
from .messages import Delivery

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
    """What a store writes for one checkpoint: the encoded head, and the keyframe when this head cuts one."""

    checkpoint_id: str
    instance_id: str
    keyframe_id: str
    head: bytes
    keyframe: bytes | None = None


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
    """Materialise a checkpoint from its head and keyframe bytes (``CheckpointDecodeError`` if malformed)."""
    fields = codec.decode(head)
    if not isinstance(fields, dict):
        raise CheckpointDecodeError(f"checkpoint head is a {type(fields).__name__}, not a record")
    kf = codec.decode(keyframe) if keyframe is not None else None
    try:
        if not isinstance(kf, dict):
            raise CheckpointDecodeError(
                f"checkpoint {fields.get('id')!r}: its keyframe {fields.get('kf')!r} is missing"
            )
        shared_delta = StateDelta(dict(fields["shared"][0]), set(fields["shared"][1]))
        executor_delta = StateDelta(dict(fields["exec"][0]), set(fields["exec"][1]))
        created_at = datetime.fromtimestamp(fields["at"], UTC)
        cp = Checkpoint(
            checkpoint_id=fields["id"],
            instance_id=fields["instance"],
            workflow_name=fields["name"],
            graph_signature=fields["sig"],
            previous_checkpoint_id=fields["prev"],
            superstep=fields["step"],
            messages=[
                Delivery(target, message, tuple(sources), request)
                for target, message, sources, request in fields["messages"]
            ],
            shared_state=shared_delta.apply_to(kf["shared"]),
            executor_states=executor_delta.apply_to(kf["exec"]),
            fan_in_buffers=fields["fan_in"],
            pending_requests=fields["pending"],
            run_id=fields["run"],
            epoch=fields["epoch"],
            created_at=created_at,
            metadata=fields["meta"],
            version=fields["v"],
        )
    except CheckpointDecodeError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointDecodeError(f"checkpoint record is malformed: {type(exc).__name__}: {exc}") from exc
    return DecodedCheckpoint(cp, fields["kf"], shared_delta, executor_delta)


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
