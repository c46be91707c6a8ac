"""The checkpoint: everything an idle instance is, at one barrier.

A ``Checkpoint`` is the public, fully materialised view. How it is *stored* is in ``engine.checkpoint_format``:
shared and executor state are written as a keyframe plus a cumulative delta, so a superstep that changes one of
1,000 executors writes one entry, not 1,000.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .messages import Delivery, PendingRequest

CHECKPOINT_VERSION = 1
_ID_SEPARATOR = "@"


def new_checkpoint_id(instance_id: str) -> str:
    """A fresh id that also names its instance, so a store can find the instance's keys from the id alone."""
    return f"{instance_id}{_ID_SEPARATOR}{os.urandom(10).hex()}"


def instance_of(checkpoint_id: str) -> str | None:
    """The instance a barrierflow-minted checkpoint id belongs to (``None`` for a foreign id)."""
    instance, sep, suffix = checkpoint_id.rpartition(_ID_SEPARATOR)
    if not sep or not instance or len(suffix) != 20:
        return None
    return instance


@dataclass(slots=True)
class Checkpoint:
    """An instance's state at a barrier, with its lineage (``previous_checkpoint_id``)."""

    checkpoint_id: str
    instance_id: str
    workflow_name: str
    graph_signature: str
    previous_checkpoint_id: str | None = None
    superstep: int = 0
    messages: list[Delivery] = field(default_factory=list)
    shared_state: dict[str, Any] = field(default_factory=dict)
    executor_states: dict[str, Any] = field(default_factory=dict)
    fan_in_buffers: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    pending_requests: dict[str, PendingRequest] = field(default_factory=dict)
    run_id: str | None = None
    epoch: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = CHECKPOINT_VERSION
