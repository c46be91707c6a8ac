"""The store seam: checkpoints and the reservation of an instance, behind one small interface.

``MemoryStore`` (embedded default) and ``broker.RedisStore`` implement the byte-level primitives and the
reservation; everything users call (``save_checkpoint``, ``load_checkpoint``...) is written once, here.

The reservation is a lease: ``reserve`` hands out a ``Lease`` carrying the caller's random token and an epoch
that grows with every successful reserve and is never reset. Why both?

- time 0: run A reserves (token a, epoch 7) with a 30 s TTL;
- time 5: A's process is paused (GC, swap) for 40 s; at time 35 its lease expires;
- time 36: run B reserves (token b, epoch 8) and writes checkpoints;
- time 45: A wakes up and releases, then writes a checkpoint.

Release is compare-and-delete on the token, so A's release leaves B's lease alone; every write is fenced (it
checks token and epoch in the same atomic step as the write), so A's checkpoint is refused with
``ReservationLostError`` and B's state stays the latest.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import Checkpoint, instance_of
from .checkpoint_format import CheckpointRecord, DecodedCheckpoint, decode_record, encode_full
from .errors import CheckpointNotFoundError, ReservationLostError, StoreError, WorkflowError

_background: set[asyncio.Task[bool]] = set()


@dataclass(slots=True)
class Lease:
    """A held reservation. ``lost`` is set when a renewal finds it gone: the holder must stop writing.

    ``unreachable`` says why when the store could not be reached for a whole TTL (the last store error):
    then nobody is known to have taken the instance over, the store is down, and the caller is told so
    (``StoreError``) rather than that another run holds the instance (``ReservationLostError``).
    """

    instance_id: str
    token: str
    epoch: int
    ttl: float
    lost: bool = False
    unreachable: str | None = None


def lease_lost_error(lease: Lease, what: str) -> WorkflowError:
    """The error of a run whose lease ended while it was ``what`` (``StoreError`` if the store was down)."""
    if lease.unreachable is not None:
        return StoreError(
            f"the lease on {lease.instance_id!r} could not be renewed for {lease.ttl:g} s because the store "
            f"could not be reached ({lease.unreachable}); stopped {what}"
        )
    return ReservationLostError(
        f"lost the reservation of {lease.instance_id!r} (epoch {lease.epoch}: it expired or another run took "
        f"it over); stopped {what}"
    )


def new_token() -> str:
    return os.urandom(16).hex()


def owner_info(run_id: str | None) -> dict[str, Any]:
    """Who holds a reservation, as ``WorkflowRunInProgressError.owner`` and ``describe()`` report it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id, "since": time.time()}


@dataclass(slots=True)
class ReservationInfo:
    """What ``describe(instance_id)`` tells about an instance's reservation."""

    instance_id: str
    held: bool
    epoch: int
    ttl_left: float | None = None
    owner: dict[str, Any] = field(default_factory=dict)


class Store(ABC):
    """Checkpoints and reservations of workflow instances.

    Subclasses implement the reservation and five primitives over encoded records; the public checkpoint API
    is built on them here, so every store stores the same bytes in the same layout.
    """

    #: Default lease TTL in seconds; a running coordinator renews about every ``lock_ttl / 3``.
    lock_ttl: float = 30.0
    #: Checkpoints kept per instance (older ones are deleted as new ones are written).
    retention: int = 50

    # -- reservation ---------------------------------------------------------------------------------------

    def reserve_nowait(self, instance_id: str, token: str, owner: dict[str, Any]) -> Lease | None:
        """Reserve without awaiting when the store can (in memory); ``None`` means "use ``reserve``".

        Raises ``WorkflowRunInProgressError`` when another token holds the instance.
        """
        return None

    @abstractmethod
    async def reserve(self, instance_id: str, token: str, owner: dict[str, Any]) -> Lease:
        """Take the instance's lease for ``lock_ttl`` seconds or raise ``WorkflowRunInProgressError``."""

    @abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend the lease if this token still holds it; ``False`` (and ``lease.lost``) when it does not."""

    @abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Compare-and-delete: drop the lease only if this token holds it. ``False`` when it did not."""

    def release_nowait(self, lease: Lease) -> None:
        """Release from a synchronous context (a finaliser): schedule it on the running loop if there is one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the lease expires by its TTL
        task = loop.create_task(self.release(lease))
        _background.add(task)  # keep a reference until done, or the task may be collected mid-flight
        task.add_done_callback(_background.discard)

    @abstractmethod
    async def describe(self, instance_id: str) -> ReservationInfo:
        """Who holds the instance, since when, TTL left, and its current epoch."""

    # -- primitives over encoded records ------------------------------------------------------------------

    @abstractmethod
    async def write_record(self, record: CheckpointRecord, lease: Lease | None) -> None:
        """Store a record, fenced by ``lease`` when given (``ReservationLostError`` if it no longer holds).

        Also indexes it as the instance's newest checkpoint and applies retention, atomically.
        """

    @abstractmethod
    async def read_record(self, checkpoint_id: str) -> tuple[bytes, bytes | None] | None:
        """The head and keyframe bytes of a checkpoint, or ``None`` when there is no such checkpoint."""

    async def read_records(self, checkpoint_ids: list[str]) -> list[tuple[bytes, bytes | None] | None]:
        """``read_record`` of several ids; stores with network round trips batch it (one per call)."""
        return [await self.read_record(checkpoint_id) for checkpoint_id in checkpoint_ids]

    @abstractmethod
    async def list_ids(self, instance_id: str) -> list[str]:
        """Checkpoint ids of an instance, newest first."""

    @abstractmethod
    async def latest_id(self, instance_id: str) -> str | None:
        """The newest checkpoint id of an instance."""

    @abstractmethod
    async def delete_record(self, checkpoint_id: str) -> bool:
        """Delete a checkpoint (and its keyframe once no head names it). ``False`` when it did not exist."""

    # -- public checkpoint API ----------------------------------------------------------------------------

    async def save_checkpoint(self, cp: Checkpoint, *, lease: Lease | None = None) -> None:
        """Store a complete checkpoint as the newest of its instance."""
        await self.write_record(encode_full(cp), lease)

    async def load_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return (await self.load_decoded(checkpoint_id)).checkpoint

    async def load_decoded(self, checkpoint_id: str) -> DecodedCheckpoint:
        """A checkpoint with its keyframe bookkeeping, for a run that continues from it."""
        record = await self.read_record(checkpoint_id)
        if record is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in this store")
        return decode_record(*record)

    async def list_checkpoints(self, instance_id: str) -> list[Checkpoint]:
        """Every retained checkpoint of an instance, newest first."""
        records = await self.read_records(await self.list_ids(instance_id))
        # a record deleted between the listing and the read is None: skipped
        return [decode_record(*record).checkpoint for record in records if record is not None]

    async def latest_checkpoint(self, instance_id: str) -> Checkpoint | None:
        checkpoint_id = await self.latest_id(instance_id)
        return None if checkpoint_id is None else await self.load_checkpoint(checkpoint_id)

    async def delete_checkpoint(self, checkpoint_id: str) -> bool:
        return await self.delete_record(checkpoint_id)

    @staticmethod
    def instance_of(checkpoint_id: str) -> str | None:
        """The instance whose keys hold ``checkpoint_id`` (ids minted by barrierflow name it)."""
        return instance_of(checkpoint_id)
