"""An instance's state between barriers, and the one way it changes: ``commit`` a checkpoint, then swap.

The state only changes after its checkpoint is stored. A failed superstep, a refused (fenced) write or an
encoding error therefore leaves the in-memory state exactly as the latest checkpoint says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .checkpoint import new_checkpoint_id
from .checkpoint_format import (
    CheckpointRecord,
    DecodedCheckpoint,
    HeadFields,
    StateDelta,
    encode_record,
    needs_keyframe,
)
from .errors import SerializationError
from .events import RunState, WorkflowEvent
from .messages import Delivery, PendingRequest
from .store import Lease, Store
from .tracing import CHECKPOINT_WRITE, Tracing, attributes
from .tracing import end as end_span


@dataclass(slots=True)
class Changes:
    """What one barrier changes. Fields left ``None`` keep their current value."""

    superstep: int | None = None
    messages: list[Delivery] | None = None
    fan_in_buffers: dict[str, dict[str, list[Any]]] | None = None
    pending_requests: dict[str, PendingRequest] | None = None
    shared: StateDelta = field(default_factory=StateDelta)  # shared-state writes, merged in delivery order
    executor_sets: dict[str, Any] = field(default_factory=dict)  # executor states are set, never deleted
    metadata: dict[str, Any] = field(default_factory=dict)
    #: start a new lineage (no parent) with empty state: what ``reset_for_new_run`` writes
    fresh: bool = False
    #: the parent to record instead of the current checkpoint (``restore`` names the restored one)
    parent: str | None = None
    #: the id to write under, when the caller minted it first (its events name the checkpoint)
    checkpoint_id: str | None = None
    #: the events this barrier commits, handed to the store with the record (a journaling store keeps them)
    events: list[WorkflowEvent] | None = None


@dataclass(slots=True)
class InstanceState:
    """The live state of an instance, equal to its checkpoint ``checkpoint_id`` whenever no commit is running."""

    checkpoint_id: str | None = None
    superstep: int = 0
    messages: list[Delivery] = field(default_factory=list)
    shared_state: dict[str, Any] = field(default_factory=dict)
    executor_states: dict[str, Any] = field(default_factory=dict)
    fan_in_buffers: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    pending_requests: dict[str, PendingRequest] = field(default_factory=dict)
    keyframe_id: str | None = None
    shared_delta: StateDelta = field(default_factory=StateDelta)
    executor_delta: StateDelta = field(default_factory=StateDelta)

    @classmethod
    def from_decoded(cls, decoded: DecodedCheckpoint, *, same_instance: bool = True) -> InstanceState:
        """State from a loaded checkpoint; from another instance's checkpoint the next commit cuts a keyframe."""
        cp = decoded.checkpoint
        return cls(
            checkpoint_id=cp.checkpoint_id,
            superstep=cp.superstep,
            messages=cp.messages,
            shared_state=cp.shared_state,
            executor_states=cp.executor_states,
            fan_in_buffers=cp.fan_in_buffers,
            pending_requests=cp.pending_requests,
            keyframe_id=decoded.keyframe_id if same_instance else None,
            shared_delta=decoded.shared_delta if same_instance else StateDelta(),
            executor_delta=decoded.executor_delta if same_instance else StateDelta(),
        )

    def run_state(self) -> RunState:
        if self.messages:
            return RunState.IN_PROGRESS
        if self.pending_requests:
            return RunState.IDLE_WITH_PENDING_REQUESTS
        return RunState.IDLE


@dataclass(frozen=True, slots=True)
class Identity:
    """Who writes a checkpoint: the instance, its graph, and the run with its lease."""

    instance_id: str
    workflow_name: str
    graph_signature: str
    run_id: str
    lease: Lease


async def commit(
    store: Store, state: InstanceState, changes: Changes, who: Identity, tracing: Tracing | None = None
) -> str:
    """Write the checkpoint that ``changes`` make of ``state``, then apply them to ``state``. Returns its id.

    Cost grows with what changed: the state dicts are copied only when a keyframe is cut (amortised by
    ``needs_keyframe``); otherwise the head carries the cumulative delta since the keyframe.
    """
    checkpoint_id = changes.checkpoint_id or new_checkpoint_id(who.instance_id)
    base = InstanceState() if changes.fresh else state  # what this checkpoint builds on
    parent = None if changes.fresh else (changes.parent or state.checkpoint_id)
    shared, executor_sets = changes.shared, changes.executor_sets
    shared_delta = base.shared_delta.merged(shared.sets, shared.deletes)
    executor_delta = base.executor_delta.merged(executor_sets)
    keyframe_id = base.keyframe_id
    keyframe_state = None
    delta_entries = len(shared_delta.sets) + len(shared_delta.deletes) + len(executor_delta.sets)
    if keyframe_id is None or needs_keyframe(
        delta_entries, len(base.shared_state) + len(base.executor_states)
    ):
        keyframe_id = checkpoint_id
        keyframe_state = (shared.apply_to(base.shared_state), {**base.executor_states, **executor_sets})
        shared_delta, executor_delta = StateDelta(), StateDelta()
    messages = changes.messages if changes.messages is not None else base.messages
    fan_in = changes.fan_in_buffers if changes.fan_in_buffers is not None else base.fan_in_buffers
    pending = changes.pending_requests if changes.pending_requests is not None else base.pending_requests
    superstep = changes.superstep if changes.superstep is not None else base.superstep
    fields = HeadFields(
        checkpoint_id=checkpoint_id,
        instance_id=who.instance_id,
        workflow_name=who.workflow_name,
        graph_signature=who.graph_signature,
        previous_checkpoint_id=parent,
        superstep=superstep,
        messages=messages,
        fan_in_buffers=fan_in,
        pending_requests=pending,
        run_id=who.run_id,
        epoch=who.lease.epoch,
        created_at=time.time(),
        metadata=changes.metadata,
    )
    try:
        record = encode_record(
            fields,
            keyframe_id=keyframe_id,
            shared_delta=shared_delta,
            executor_delta=executor_delta,
            keyframe_state=keyframe_state,
        )
    except SerializationError as exc:
        raise _in_user_terms(exc, fields, changes) from exc
    record.events = changes.events
    if tracing is None:
        await store.write_record(record, who.lease)
    else:
        await _traced_write(store, record, who, tracing)
    # stored: now, and only now, the live state changes
    if keyframe_state is not None:
        state.shared_state, state.executor_states = keyframe_state
    else:  # not fresh (a fresh lineage always cuts a keyframe): apply what changed, in place
        if shared:
            shared.apply_in_place(state.shared_state)
        if executor_sets:
            state.executor_states.update(executor_sets)
    state.checkpoint_id = checkpoint_id
    state.superstep = superstep
    state.messages = messages
    state.fan_in_buffers = fan_in
    state.pending_requests = pending
    state.keyframe_id = keyframe_id
    state.shared_delta, state.executor_delta = shared_delta, executor_delta
    return checkpoint_id


async def _traced_write(store: Store, record: CheckpointRecord, who: Identity, tracing: Tracing) -> None:
    """``store.write_record`` under a ``barrierflow.checkpoint.write`` span that says how many bytes it wrote."""
    size = len(record.head) + (len(record.keyframe) if record.keyframe is not None else 0)
    span = tracing.start(
        CHECKPOINT_WRITE,
        attributes(
            instance_id=who.instance_id,
            run_id=who.run_id,
            checkpoint_id=record.checkpoint_id,
            bytes=size,
            events=len(record.events or ()),
        ),
    )
    try:
        await store.write_record(record, who.lease)
    except BaseException as exc:
        end_span(span, exc)
        raise
    end_span(span)


def _in_user_terms(error: SerializationError, cp: HeadFields, changes: Changes) -> SerializationError:
    """Say which message, state key or request holds the value (slow path: only after encoding failed)."""
    suspects: list[tuple[str, Any]] = [
        (f"the message for {d.target_id!r} from {', '.join(d.source_ids)!r}", d.message) for d in cp.messages
    ]
    suspects += [(f"shared state key {key!r}", value) for key, value in changes.shared.sets.items()]
    suspects += [(f"the executor state of {eid!r}", value) for eid, value in changes.executor_sets.items()]
    suspects += [(f"the data of request {rid!r}", r.data) for rid, r in cp.pending_requests.items()]
    return codec.first_unencodable(suspects, f"checkpoint of superstep {cp.superstep}: ") or error
