"""Small helpers shared by the engine behaviour tests (a plain module: ``tests/engine`` has no ``__init__``
on purpose, since a package named ``engine`` there would shadow the real ``engine`` package)."""

from __future__ import annotations

import itertools
from typing import Any

from barrierflow.engine import Checkpoint, Workflow, WorkflowEvent


def types_of(events: list[WorkflowEvent], *, ignore: tuple[str, ...] = ()) -> list[str]:
    return [e.type for e in events if e.type not in ignore]


def of_type(events: list[WorkflowEvent], kind: str) -> list[WorkflowEvent]:
    return [e for e in events if e.type == kind]


async def checkpoints(wf: Workflow) -> list[Checkpoint]:
    """The instance's checkpoints, newest first."""
    return await wf.store.list_checkpoints(wf.instance_id)


async def latest(wf: Workflow) -> Checkpoint:
    cp = await wf.store.latest_checkpoint(wf.instance_id)
    assert cp is not None
    return cp


def queued(cp: Checkpoint) -> list[tuple[str, Any]]:
    """A checkpoint's queued deliveries as (target, message)."""
    return [(d.target_id, d.message) for d in cp.messages]


def assert_lineage(cps_newest_first: list[Checkpoint]) -> None:
    """Each checkpoint's parent is the one written before it."""
    for newer, older in itertools.pairwise(cps_newest_first):
        assert newer.previous_checkpoint_id == older.checkpoint_id
