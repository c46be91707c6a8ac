"""Reading an instance's checkpoints for ``status`` and ``checkpoints list``, with or without its modules.

A checkpoint holds the workflow's own types (messages, requests, state), which decode only in a process that
imported the modules registering them (``-I MODULE``). What an operator needs first (which checkpoint is the
latest, its superstep, what is queued or pending, who holds the lease) is plain data in the checkpoint's head,
so these functions fall back to that summary and say what they could not decode, instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from barrierflow.engine import Checkpoint, Store
from barrierflow.engine.checkpoint_format import CheckpointSummary, decode_record, summarize_head
from barrierflow.engine.errors import CheckpointDecodeError

from .render import jsonable

IMPORT_HINT = "pass -I MODULE (the module that registers its types) or set BARRIERFLOW_IMPORTS"


@dataclass(slots=True)
class StoredCheckpoint:
    """One checkpoint as read: always its summary; the decoded checkpoint, or why it could not be decoded."""

    summary: CheckpointSummary
    checkpoint: Checkpoint | None = None
    undecoded: str | None = None


def _read(record: tuple[bytes, bytes | None]) -> StoredCheckpoint:
    try:
        cp = decode_record(*record).checkpoint
    except CheckpointDecodeError as exc:
        return StoredCheckpoint(summarize_head(record[0]), undecoded=str(exc))
    return StoredCheckpoint(CheckpointSummary.of(cp), cp)


async def list_stored(store: Store, instance_id: str) -> list[StoredCheckpoint]:
    """The retained checkpoints of an instance, newest first (a record deleted meanwhile is skipped)."""
    records = await store.read_records(await store.list_ids(instance_id))
    return [_read(record) for record in records if record is not None]


async def latest_stored(store: Store, instance_id: str) -> StoredCheckpoint | None:
    checkpoint_id = await store.latest_id(instance_id)
    if checkpoint_id is None:
        return None
    record = await store.read_record(checkpoint_id)
    return None if record is None else _read(record)


def summary_record(stored: StoredCheckpoint) -> dict[str, Any]:
    """The JSON fields of one checkpoint (``metadata`` only when it could be decoded)."""
    s = stored.summary
    record: dict[str, Any] = {
        "checkpoint_id": s.checkpoint_id,
        "instance_id": s.instance_id,
        "workflow_name": s.workflow_name,
        "superstep": s.superstep,
        "created_at": s.created_at.isoformat(timespec="seconds"),
        "queued_messages": s.queued_messages,
        "pending_requests": s.pending_request_ids,
        "previous_checkpoint_id": s.previous_checkpoint_id,
        "run_id": s.run_id,
        "epoch": s.epoch,
        "metadata": jsonable(stored.checkpoint.metadata) if stored.checkpoint is not None else None,
    }
    if stored.undecoded is not None:
        record["undecoded"] = f"{stored.undecoded}; {IMPORT_HINT}"
    return record
