"""The embedded store: checkpoints and reservations in this process's memory.

It keeps the same encoded records as the Redis store (so a value that would not survive Redis fails here too,
and a loaded checkpoint never aliases live objects), and the same lease rules: TTL, renew, compare-and-delete,
fenced writes. Everything is synchronous underneath, so ``reserve_nowait`` can reserve at call time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .checkpoint_format import CheckpointRecord
from .errors import ReservationLostError, WorkflowRunInProgressError
from .store import Lease, ReservationInfo, Store


@dataclass(slots=True)
class _Hold:
    token: str
    expires_at: float
    owner: dict[str, Any]


class MemoryStore(Store):
    """In-process ``Store``. Share one instance between workflows to let them see each other's checkpoints."""

    def __init__(
        self, *, lock_ttl: float = 30.0, retention: int = 50, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if retention < 1:
            raise ValueError("retention must keep at least one checkpoint")
        self.lock_ttl = lock_ttl
        self.retention = retention
        self._clock = clock
        self._heads: dict[str, tuple[bytes, str, str]] = {}  # checkpoint id -> (head, keyframe id, instance)
        self._keyframes: dict[str, bytes] = {}
        self._keyframe_refs: dict[str, int] = {}
        self._index: dict[str, list[str]] = {}  # instance -> checkpoint ids, oldest first
        self._holds: dict[str, _Hold] = {}
        self._epochs: dict[str, int] = {}

    # -- reservation ---------------------------------------------------------------------------------------

    def _live_hold(self, instance_id: str) -> _Hold | None:
        hold = self._holds.get(instance_id)
        if hold is not None and hold.expires_at <= self._clock():
            del self._holds[instance_id]
            return None
        return hold

    def reserve_nowait(self, instance_id: str, token: str, owner: dict[str, Any]) -> Lease:
        hold = self._live_hold(instance_id)
        if hold is not None and hold.token != token:
            raise WorkflowRunInProgressError(
                f"workflow instance {instance_id!r} is reserved by run {hold.owner.get('run_id')!r}",
                hold.owner,
            )
        epoch = self._epochs.get(instance_id, 0) + 1
        self._epochs[instance_id] = epoch
        self._holds[instance_id] = _Hold(token, self._clock() + self.lock_ttl, owner)
        return Lease(instance_id, token, epoch, self.lock_ttl)

    async def reserve(self, instance_id: str, token: str, owner: dict[str, Any]) -> Lease:
        return self.reserve_nowait(instance_id, token, owner)

    def _holds_lease(self, lease: Lease) -> bool:
        hold = self._live_hold(lease.instance_id)
        return (
            hold is not None
            and hold.token == lease.token
            and self._epochs.get(lease.instance_id) == lease.epoch
        )

    async def renew(self, lease: Lease) -> bool:
        if not self._holds_lease(lease):
            lease.lost = True
            return False
        self._holds[lease.instance_id].expires_at = self._clock() + lease.ttl
        return True

    def release_nowait(self, lease: Lease) -> None:
        if self._holds_lease(lease):
            del self._holds[lease.instance_id]

    async def release(self, lease: Lease) -> bool:
        held = self._holds_lease(lease)
        if held:
            del self._holds[lease.instance_id]
        return held

    async def describe(self, instance_id: str) -> ReservationInfo:
        hold = self._live_hold(instance_id)
        epoch = self._epochs.get(instance_id, 0)
        if hold is None:
            return ReservationInfo(instance_id, held=False, epoch=epoch)
        return ReservationInfo(instance_id, True, epoch, hold.expires_at - self._clock(), dict(hold.owner))

    # -- records --------------------------------------------------------------------------------------------

    async def write_record(self, record: CheckpointRecord, lease: Lease | None) -> None:
        if lease is not None and not self._holds_lease(lease):
            lease.lost = True
            raise ReservationLostError(
                f"the lease on {lease.instance_id!r} (epoch {lease.epoch}) has ended; "
                f"checkpoint {record.checkpoint_id!r} was not written"
            )
        if record.keyframe is not None:
            self._keyframes[record.keyframe_id] = record.keyframe
        # count the new reference before dropping a rewritten id, so a keyframe both name survives
        self._keyframe_refs[record.keyframe_id] = self._keyframe_refs.get(record.keyframe_id, 0) + 1
        if record.checkpoint_id in self._heads:
            self._drop(record.checkpoint_id)
        self._heads[record.checkpoint_id] = (record.head, record.keyframe_id, record.instance_id)
        ids = self._index.setdefault(record.instance_id, [])
        ids.append(record.checkpoint_id)
        while len(ids) > self.retention:
            self._drop(ids[0])

    async def read_record(self, checkpoint_id: str) -> tuple[bytes, bytes | None] | None:
        entry = self._heads.get(checkpoint_id)
        if entry is None:
            return None
        head, keyframe_id, _ = entry
        return head, self._keyframes.get(keyframe_id)

    async def list_ids(self, instance_id: str) -> list[str]:
        return self._index.get(instance_id, [])[::-1]

    async def latest_id(self, instance_id: str) -> str | None:
        ids = self._index.get(instance_id)
        return ids[-1] if ids else None

    async def delete_record(self, checkpoint_id: str) -> bool:
        if checkpoint_id not in self._heads:
            return False
        self._drop(checkpoint_id)
        return True

    def _drop(self, checkpoint_id: str) -> None:
        _, keyframe_id, instance_id = self._heads.pop(checkpoint_id)
        self._index[instance_id].remove(checkpoint_id)
        refs = self._keyframe_refs[keyframe_id] - 1
        if refs:
            self._keyframe_refs[keyframe_id] = refs
        else:
            del self._keyframe_refs[keyframe_id]
            self._keyframes.pop(keyframe_id, None)
