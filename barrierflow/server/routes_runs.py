"""``/api/runs/{run_id}``: a run's record, cancelling it, and its events (SSE, ending when it ends)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from sse_starlette import EventSourceResponse

from barrierflow.broker.run_records import split_run_id
from barrierflow.records import run_record

from .context import ApiDep
from .errors import ApiError
from .responses import errors
from .schemas import Cancelled, RunRecord
from .sse import SSE_RESPONSE, cursor, event_stream

router = APIRouter(prefix="/api/runs")

RunId = Annotated[str, Path(max_length=300, description="INSTANCE@<16 hex digits>")]


def _not_found(exc: LookupError) -> ApiError:
    return ApiError(404, str(exc.args[0] if exc.args else exc), "UnknownRun")


@router.get("/{run_id}", response_model=RunRecord, responses=errors(404))
async def get_run(run_id: RunId, api: ApiDep) -> Any:
    try:
        return run_record(await api.runs.get(run_id))
    except LookupError as exc:
        raise _not_found(exc) from None


@router.post("/{run_id}/cancel", response_model=Cancelled, responses=errors(404))
async def cancel_run(run_id: RunId, api: ApiDep) -> Any:
    """A queued run never starts; a running one stops at its next barrier. ``false``: it had ended."""
    try:
        return {"cancelled": await api.runs.cancel(run_id)}
    except LookupError as exc:
        raise _not_found(exc) from None


@router.get("/{run_id}/events", response_class=EventSourceResponse, responses={**SSE_RESPONSE, **errors(404)})
async def run_events(
    run_id: RunId,
    api: ApiDep,
    after: Annotated[str | None, Query(max_length=40, description="Resume after this event id")] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> Any:
    """The run's events, live, ending with its ``run_ended`` event."""
    resume = cursor(last_event_id, after)
    try:
        instance_id, run_hex = split_run_id(run_id)
    except LookupError as exc:
        raise _not_found(exc) from None
    if not await api.store.client.exists(api.keys.run_record(instance_id, run_hex)):
        raise ApiError(404, f"no run {run_id!r} (never submitted here, or its record expired)", "UnknownRun")
    return event_stream(api.runs.stream(run_id), instance_id, api.encoded, api.keepalive, resume)
