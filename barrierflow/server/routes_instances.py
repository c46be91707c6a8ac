"""``/api/instances``: listing, one instance, its events (SSE), checkpoints, answers, reset and restore."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query
from sse_starlette import EventSourceResponse

from barrierflow.cli.instances import list_stored
from barrierflow.engine.errors import CheckpointDecodeError, GraphSignatureMismatchError
from barrierflow.records import instance_record, iso

from .context import Api, ApiDep
from .errors import ApiError
from .responses import errors
from .routes_workflows import submit_run
from .schemas import (
    MAX_WAIT,
    CheckpointRecord,
    InstanceRecord,
    Reset,
    RestoreBody,
    Restored,
    RunRecord,
    Ticket,
)
from .sse import SSE_RESPONSE, cursor, event_stream

router = APIRouter(prefix="/api/instances")

InstanceId = Annotated[str, Path(min_length=1, max_length=200)]
Status = Literal["idle", "in_progress", "idle_with_pending_requests", "failed"]


def _unknown(instance_id: str) -> ApiError:
    return ApiError(404, f"no instance {instance_id!r} here (no checkpoint and no run)", "UnknownInstance")


async def _known(api: Api, instance_id: str) -> None:
    if "{" in instance_id or "}" in instance_id or not await api.instance_exists(instance_id):
        raise _unknown(instance_id)


@router.get("", response_model=list[InstanceRecord], responses=errors())
async def list_instances(
    api: ApiDep,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """The most recently active instances (submitted to, started or ended a run), newest first."""
    infos = await api.runs.list_instances(workflow=workflow, status=status, limit=limit)
    return [instance_record(info) for info in infos]


@router.get("/{instance_id}", response_model=InstanceRecord, responses=errors(404))
async def get_instance(instance_id: InstanceId, api: ApiDep) -> Any:
    await _known(api, instance_id)
    try:
        return instance_record(await api.runs.instance(instance_id))
    except LookupError:
        raise _unknown(instance_id) from None


@router.get(
    "/{instance_id}/events", response_class=EventSourceResponse, responses={**SSE_RESPONSE, **errors(404)}
)
async def instance_events(
    instance_id: InstanceId,
    api: ApiDep,
    after: Annotated[str | None, Query(max_length=40, description="Resume after this event id")] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> Any:
    """Every event of the instance (all its runs), from the oldest kept one or after the cursor, then live."""
    resume = cursor(last_event_id, after)
    await _known(api, instance_id)
    return event_stream(api.runs.events(instance_id, after=resume), instance_id, api.encoded, api.keepalive)


@router.get("/{instance_id}/checkpoints", response_model=list[CheckpointRecord], responses=errors(404))
async def checkpoints(instance_id: InstanceId, api: ApiDep) -> Any:
    """The retained checkpoints, newest first, with their lineage (``previous_checkpoint_id``)."""
    await _known(api, instance_id)
    found = []
    for stored in await list_stored(api.store, instance_id):
        s = stored.summary
        found.append(
            {
                "checkpoint_id": s.checkpoint_id,
                "previous_checkpoint_id": s.previous_checkpoint_id,
                "superstep": s.superstep,
                "created_at": iso(s.created_at),
                "queued": s.queued_messages,
                "pending": list(s.pending_request_ids),
                "run_id": s.run_id,
                "metadata": _plain(stored.checkpoint.metadata) if stored.checkpoint is not None else None,
            }
        )
    return found


def _plain(metadata: Any) -> Any:
    from barrierflow.json_io import jsonable

    return jsonable(dict(metadata or {}))


@router.post(
    "/{instance_id}/responses",
    status_code=202,
    response_model=Ticket,
    responses={
        200: {"model": RunRecord, "description": "The run ended within `wait`"},
        **errors(400, 404, 409),
    },
)
async def answer(
    instance_id: InstanceId,
    answers: Annotated[dict[str, Any], Body(description="{request_id: answer}")],
    api: ApiDep,
    wait: Annotated[float | None, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the run")] = None,
) -> Any:
    """Submit a run that answers pending requests (each answer converted to the type its request asked for):
    202 and its ticket; with ``?wait=`` and the run ended in time, 200 and its record."""
    if not answers:
        raise ApiError(422, "give at least one answer: {request_id: answer}")
    await _known(api, instance_id)
    name = await api.workflow_of(instance_id)
    api.graph(name)
    responses = await api.fit_responses(instance_id, answers, field="")
    return await submit_run(api, name, None, wait, instance_id=instance_id, responses=responses)


async def _idle_handle(api: Api, instance_id: str) -> Any:
    """A handle for reset/restore; 409 while a run of the queue is active on the instance."""
    await _known(api, instance_id)
    name = await api.workflow_of(instance_id)
    info = await api.runs.instance(instance_id)
    if info.active_run_id is not None or info.holder is not None:
        holder = info.active_run_id or (info.holder or {}).get("run_id") or "a run outside the queue"
        raise ApiError(
            409, f"instance {instance_id!r} is held by {holder}: cancel it or wait", "InstanceBusy"
        )
    return api.handle(name, instance_id)


@router.post("/{instance_id}/reset", response_model=Reset, responses=errors(404, 409))
async def reset(instance_id: InstanceId, api: ApiDep) -> Any:
    """A clean slate: an empty checkpoint (queued work and pending requests dropped); 409 while held."""
    wf = await _idle_handle(api, instance_id)
    return {"checkpoint_id": await wf.reset_for_new_run()}


@router.post("/{instance_id}/restore", response_model=Restored, responses=errors(404, 409))
async def restore(instance_id: InstanceId, body: RestoreBody, api: ApiDep) -> Any:
    """Make a checkpoint the instance's latest again (a copy parented by it); 409 while held."""
    wf = await _idle_handle(api, instance_id)
    try:
        new_id = await wf.restore(body.checkpoint_id)
    except GraphSignatureMismatchError as exc:
        raise ApiError(409, str(exc), type(exc).__name__) from None
    except CheckpointDecodeError as exc:  # another workflow's checkpoint, of types this server never imported
        raise ApiError(
            422, f"checkpoint {body.checkpoint_id!r} cannot be read here: {exc}", type(exc).__name__
        ) from None
    return {"checkpoint_id": new_id, "restored_from": body.checkpoint_id}
