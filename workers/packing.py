"""Packing: the task copies of many runs, ready together, travel to the workers in a few Celery tasks.

A coordinator drives hundreds of runs on one event loop. Under load their supersteps end together (a worker
writes the results of a whole pack in one round trip, so their runs resume in the same loop turn) and their
next supersteps are ready together. Sent one Celery message per task copy, a barrier of N runs costs N kombu
publishes here (a synchronous round trip each) and N receive/claim/write/ack cycles on the workers; packed,
it costs a few messages, as many as there are worker slots to keep busy: O(workers), not O(instances).

Timeline, 256 runs on 2 worker slots (``tasks_per_slot`` 2):

    t=0     the first run hands its copy to the packer: a publish is scheduled for the next loop turn
    t=0     the other runs woken in the same turn hand theirs in: still one batch
    t+1     the batch goes out as 4 packs of ~64 copies (round-robin: the copies of one superstep land in
            different packs, so a wide superstep still spreads over the workers), in one thread hop
    t+1..   runs whose copies become ready while that publish is in flight wait for it to end, then go
            out together in the next batch (at most one publish in flight per loop: group commit)

A lone run is never delayed: its copy goes out in the next loop turn, as a plain single-copy task, exactly as
without packing. Nothing about a copy changes inside a pack: each keeps its own envelope (instance, lease
token and epoch, superstep, task number, send number), is claimed, fenced, run, written and re-sent on its
own (``workers/tasks.py``: ``handle_pack``), so one run's lost lease or collected superstep skips that copy
and never spoils the others; a copy whose worker died is re-sent alone by its own run's checks (it may ride
in a new pack with other copies then).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

#: A task copy as the dispatcher hands it in (its encoded payload; anything that travels with it per copy).
Copy = TypeVar("Copy")


def split_into_packs(copies: list[Copy], packs: int, most: int) -> list[list[Copy]]:
    """``copies`` dealt round-robin into ``packs`` packs (more if one would hold more than ``most``).

    Round-robin keeps the copies of one superstep (consecutive here) in different packs.
    """
    if not copies:
        return []
    count = max(1, min(len(copies), max(packs, math.ceil(len(copies) / max(1, most)))))
    return [copies[start::count] for start in range(count)]


class Packer(Generic[Copy]):
    """Collects the copies handed in during one loop turn (or one publish) and publishes them as packs.

    ``publish`` runs in a thread (kombu's publishing is synchronous) and gets the packs, each a list of one
    or more copies; ``packs`` says how many packs to make (the worker slots to keep busy); ``most``: copies
    per pack at most (1: every copy alone, no packing). A copy is whatever the dispatcher hands in (the
    encoded payload; anything else that must travel per copy rides along). One packer per event loop.
    """

    def __init__(
        self,
        publish: Callable[[list[list[Copy]]], None],
        packs: Callable[[], Awaitable[int]],
        most: int,
    ) -> None:
        self._publish = publish
        self._packs = packs
        self.most = max(1, most)
        self._waiting: list[tuple[list[Copy], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def send(self, copies: list[Copy]) -> None:
        """Publish ``copies`` with whatever else is ready now; returns once they are on the broker."""
        if not copies:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((copies, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())  # starts next turn: this turn's copies join
        await future

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            copies = [copy for waiting, _ in batch for copy in waiting]
            try:
                packs = split_into_packs(copies, await self._packs(), self.most)
                await asyncio.to_thread(self._publish, packs)
            except BaseException as exc:  # every sender of the batch hears it (a cancel: as an error)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
