"""``/api/health``, ``/api/workflows`` and submissions (``POST /api/workflows/{name}/runs``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from barrierflow.engine.errors import WorkflowRunInProgressError
from barrierflow.engine.graph import mermaid
from barrierflow.engine.registry import registered_workflows, workflow_graph
from barrierflow.json_io import start_input
from barrierflow.records import run_record

from .context import Api, ApiDep
from .errors import ApiError
from .responses import errors
from .schemas import Health, RunRecord, SubmitBody, Ticket, WorkflowSummary

router = APIRouter(prefix="/api")

#: Seconds a health check waits for Redis's answer.
HEALTH_TIMEOUT = 2.0


@router.get("/health", response_model=Health, responses=errors())
async def health(api: ApiDep) -> Any:
    """200 when Redis answers a ``PING``, 503 otherwise."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await api.store.client.ping()
    except Exception as exc:
        raise ApiError(503, f"Redis does not answer: {type(exc).__name__}: {exc}") from None
    return {"redis": "ok"}


@router.get("/workflows", response_model=list[WorkflowSummary], responses=errors())
async def workflows() -> Any:
    """The workflows this server imported (``--import``), with their graphs as Mermaid text."""
    found = []
    for name in sorted(registered_workflows()):
        graph = workflow_graph(name)
        found.append(
            {
                "name": name,
                "signature": graph.signature,
                "executors": list(graph.executors),
                "start_executor": graph.start_id,
                "mermaid": mermaid(graph),
            }
        )
    return found


@router.post(
    "/workflows/{name}/runs",
    status_code=202,
    response_model=Ticket,
    responses={
        200: {"model": RunRecord, "description": "The run ended within `wait`"},
        **errors(400, 404, 409),
    },
)
async def submit(body: SubmitBody, name: Annotated[str, Path(max_length=200)], api: ApiDep) -> Any:
    """Queue a run (202 and its ticket); with ``wait`` and the run ended in time, 200 and its record."""
    graph = api.graph(name)
    message = None
    if body.input is not None:
        message = start_input(graph.executors[graph.start_id], body.input)
    responses = None
    if body.responses:
        if body.instance_id is None:
            raise ApiError(422, "responses answer a waiting instance: give instance_id too")
        responses = await api.fit_responses(body.instance_id, body.responses)
    try:
        return await submit_run(
            api,
            name,
            message,
            body.wait,
            instance_id=body.instance_id,
            responses=responses,
            checkpoint_id=body.checkpoint_id,
            strategy=body.strategy,
        )
    except WorkflowRunInProgressError:
        raise
    except (ValueError, TypeError) as exc:
        raise ApiError(422, str(exc)) from None


async def submit_run(api: Api, name: str, message: Any, wait: float | None, **options: Any) -> Any:
    """Queue the run: 202 and its ticket; with ``wait`` and the run ended in time, 200 and its record
    (``RunQueue.submit_and_wait``: the waiter is in place before the run exists, one round trip less)."""
    if wait is None:
        ticket = await api.runs.submit(name, message, **options)
        return {"run_id": ticket.run_id, "instance_id": ticket.instance_id, "state": "queued"}
    ticket, info = await api.runs.submit_and_wait(name, message, timeout=wait, **options)
    if info is not None:
        return JSONResponse(run_record(info), status_code=200)
    state = (await api.runs.get(ticket.run_id)).state
    return {"run_id": ticket.run_id, "instance_id": ticket.instance_id, "state": state}
