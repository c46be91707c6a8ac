"""What the routes share: the run queue, its store, the workflows this process imported, and the steps
several routes take (finding a workflow, fitting JSON to its types, building a handle for reset/restore)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from barrierflow.engine.graph import Graph
from barrierflow.engine.registry import registered_workflows, workflow_factory, workflow_graph
from barrierflow.json_io import from_json

from .errors import ApiError
from .sse import EncodedEvents


class Api:
    def __init__(self, runs: Any, *, keepalive: float) -> None:
        self.runs = runs
        self.store = runs.store
        self.keys = runs.store.keys
        self.keepalive = keepalive
        self.encoded = EncodedEvents()

    def graph(self, name: str) -> Graph:
        """The graph of an imported workflow; 404 for one this server does not know."""
        if name not in registered_workflows():
            known = ", ".join(sorted(registered_workflows())) or "none"
            raise ApiError(
                404,
                f"no workflow {name!r} here (known: {known}); start the server with --import MODULE",
                "UnknownWorkflow",
            )
        return workflow_graph(name)

    def handle(self, name: str, instance_id: str) -> Any:
        """A ``Workflow`` handle on the instance, for its idle operations (reset, restore)."""
        self.graph(name)
        return workflow_factory(name)().build(instance_id=instance_id, store=self.store)

    async def instance_exists(self, instance_id: str) -> bool:
        """Whether the instance has checkpoints, runs or events here (one round trip, nothing decoded)."""
        keys = self.keys
        found = await self.store.client.exists(
            keys.index(instance_id),
            keys.events(instance_id),
            keys.run_queue(instance_id),
            keys.runs_done(instance_id),
        )
        return found > 0

    async def workflow_of(self, instance_id: str) -> str:
        """The instance's workflow name (latest checkpoint, else its runs); 404 when it is unknown."""
        checkpoint = await self.store.latest_checkpoint(instance_id)
        if checkpoint is not None:
            return checkpoint.workflow_name
        try:
            info = await self.runs.instance(instance_id)
        except LookupError:
            raise ApiError(404, f"no instance {instance_id!r} here", "UnknownInstance") from None
        if info.workflow_name is None:
            raise ApiError(404, f"instance {instance_id!r} has no workflow yet", "UnknownInstance")
        return info.workflow_name

    async def fit_responses(
        self, instance_id: str, answers: dict[str, Any], field: str = "responses"
    ) -> dict[str, Any]:
        """Each answer as its request's declared type: 400 for an id that is not pending, 422 for a wrong type."""
        checkpoint = await self.store.latest_checkpoint(instance_id)
        pending = checkpoint.pending_requests if checkpoint is not None else {}
        unknown = [rid for rid in answers if rid not in pending]
        if unknown:
            waiting = ", ".join(sorted(pending)) or "none"
            raise ApiError(
                400,
                f"instance {instance_id!r} has no pending request {unknown[0]!r} (pending: {waiting})",
                "UnknownRequestError",
            )
        return {
            rid: from_json(value, pending[rid].response_type, f"{field}.{rid}" if field else rid)
            for rid, value in answers.items()
        }


async def api_of(request: Request) -> Api:
    """The app's ``Api``. ``async`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread,
    a thread hop per request (it was a third of the framework's time per request)."""
    return request.app.state.api


#: A route's parameter ``api: ApiDep`` is the app's ``Api``.
ApiDep = Annotated[Api, Depends(api_of)]
