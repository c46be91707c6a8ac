"""``WorkflowExecutor``: a whole workflow used as one executor of another (DESIGN §2, sub-workflows).

Each message the executor receives starts a fresh *execution* of the child workflow, which runs its own
supersteps inside the parent's superstep, with the engine's own superstep code (plan, deliver, route, merge at a
barrier), until it is idle. What comes out:

- the child's outputs are sent on from the ``WorkflowExecutor``, along its outgoing edges, in the order the
  child yielded them (they are not outputs of the parent);
- a child's ``request_info`` becomes a pending request of the parent instance, with the same id, data and
  response type; the answer given to the parent's ``run(responses=...)`` is delivered to this executor, which
  queues it for the child executor that asked and continues *that* execution;
- the child's custom events and its dropped-message warnings are added to the parent's events, their
  ``executor_id`` prefixed with this executor's id (``review/ask``).

An execution that still waits for answers is kept in this executor's *executor state* (so the parent's
checkpoint holds it and a parent resumed in another process continues it): ``{"executions": {id:
ChildExecution}, "requests": {request id: execution id}}``, an execution's id being the first of the request ids
it waits for (no randomness: the same run makes the same checkpoints, in process or on workers). It lives at the parent's barriers only: nothing of a
child execution is kept anywhere else, so a failed attempt or superstep of the parent leaves no trace of it
either. Nesting works to any depth: a child graph may contain ``WorkflowExecutor``s.

The child's live events (``executor_invoked``/``completed``/``retry``) stay inside it; a child handler that fails
(after its own retries) fails this executor's delivery with ``ExecutorFailedError`` naming the child executor,
and this executor's own ``RetryPolicy`` then applies to the whole execution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .context import WorkflowContext
from .dispatch import LocalDispatcher, SuperstepWork
from .errors import ConvergenceError, ExecutorFailedError, WorkflowError
from .events import EventType, WorkflowEvent
from .executor import Executor, HandlerSpec
from .messages import INPUT_SOURCE, Delivery, PendingRequest
from .routing import route
from .runner import barrier_changes, plan
from .typing_utils import matcher_for

if TYPE_CHECKING:
    from .builder import WorkflowBuilder
    from .graph import Graph
    from .outcome import DeliveryOutcome


@dataclass(slots=True)
class ChildExecution:
    """One execution of a child workflow between its supersteps: what a parent checkpoint keeps of it."""

    superstep: int = 0
    messages: list[Delivery] = field(default_factory=list)
    shared_state: dict[str, Any] = field(default_factory=dict)
    executor_states: dict[str, Any] = field(default_factory=dict)
    fan_in_buffers: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    pending_requests: dict[str, PendingRequest] = field(default_factory=dict)


def _ignore(event: WorkflowEvent) -> None:
    """The child's live events stay inside it."""


class WorkflowExecutor(Executor):
    """A workflow, given as its ``WorkflowBuilder``, used as one executor: ``WorkflowExecutor(builder, id=...)``.

    It takes what the child's start executor takes, and sends on what the child outputs. The child graph is
    validated here, and is part of the parent's graph signature and Mermaid graph (as a subgraph).
    """

    def __init__(self, workflow: WorkflowBuilder, id: str | None = None) -> None:
        from .builder import WorkflowBuilder

        if not isinstance(workflow, WorkflowBuilder):
            raise TypeError(
                f"WorkflowExecutor takes the child's WorkflowBuilder (what a workflow factory returns), "
                f"not {type(workflow).__name__}"
            )
        self.subgraph: Graph = workflow.build_graph()
        self._dispatcher = LocalDispatcher()
        super().__init__(id if id is not None else workflow.name)

    def _discover(self) -> None:
        start = self.subgraph.executors[self.subgraph.start_id]
        self._handlers = [
            (dataclasses.replace(spec, name="start_execution", output_types=None, is_async=True), self._start)
            for spec in start.handler_specs
        ]
        answers = HandlerSpec(
            name="continue_execution",
            message_type=Any,
            matches=matcher_for(Any),
            output_types=None,
            takes_context=True,
            passes_request=True,
            request_type=Any,
            matches_request=matcher_for(Any),
        )
        self._response_handlers = [(answers, self._answer)]

    async def reset(self) -> None:
        """Reset the child's executors (and, through nested ``WorkflowExecutor``s, theirs)."""
        for executor in self.subgraph.executors.values():
            await executor.reset()

    # -- handlers ----------------------------------------------------------------------------------------------

    async def _start(self, message: Any, ctx: WorkflowContext) -> None:
        execution = ChildExecution(messages=[Delivery(self.subgraph.start_id, message, (INPUT_SOURCE,))])
        await self._continue(None, execution, ctx)

    async def _answer(self, request: PendingRequest, answer: Any, ctx: WorkflowContext) -> None:
        state = ctx.get_executor_state() or {}
        execution_id = state.get("requests", {}).get(request.request_id)
        execution = state.get("executions", {}).get(execution_id)
        if execution is None:
            raise WorkflowError(
                f"sub-workflow executor {self.id!r} has no execution waiting for request {request.request_id!r}"
            )
        asked = execution.pending_requests.pop(request.request_id)
        execution.messages.append(Delivery(asked.source_executor_id, answer, (INPUT_SOURCE,), asked))
        await self._continue(execution_id, execution, ctx)

    # -- running the child ---------------------------------------------------------------------------------------

    async def _continue(self, kept_as: str | None, execution: ChildExecution, ctx: WorkflowContext) -> None:
        """Run the execution until it is idle, pass on what it produced, and keep it if it waits for answers.

        ``kept_as``: the id it was kept under so far (``None`` for a new execution).
        """
        graph = self.subgraph
        for _ in range(graph.max_supersteps):
            if not execution.messages:
                break
            await self._superstep(execution, ctx)
        else:
            if execution.messages:
                raise ConvergenceError(
                    f"sub-workflow {graph.name!r} of executor {self.id!r} reached max_supersteps="
                    f"{graph.max_supersteps} with {len(execution.messages)} message(s) still queued"
                )
        if not execution.pending_requests and kept_as is None:
            return  # nothing was kept for it and nothing needs keeping: leave the state as it is
        state = ctx.get_executor_state() or {"executions": {}, "requests": {}}
        executions = {eid: e for eid, e in state["executions"].items() if eid != kept_as}
        requests = {rid: eid for rid, eid in state["requests"].items() if eid != kept_as}
        if execution.pending_requests:
            execution_id = min(execution.pending_requests)
            for request_id in execution.pending_requests:
                if request_id in requests:
                    raise WorkflowError(
                        f"sub-workflow executor {self.id!r}: two of its executions wait for request "
                        f"{request_id!r}; give each request_info call a request id of its own"
                    )
                requests[request_id] = execution_id
            executions[execution_id] = execution
        ctx.set_executor_state({"executions": executions, "requests": requests})

    async def _superstep(self, execution: ChildExecution, ctx: WorkflowContext) -> None:
        """One superstep of the child, with the engine's own delivery, routing and barrier merge."""
        graph = self.subgraph
        superstep = execution.superstep + 1
        work = SuperstepWork(
            instance_id=ctx.instance_id,
            run_id=ctx.run_id,
            superstep=superstep,
            workflow_name=graph.name,
            graph_signature=graph.signature,
            batches=plan(execution.messages),
            shared_state=execution.shared_state,
            executor_states=execution.executor_states,
            policies=graph.policies,
        )
        result = await self._dispatcher.run_superstep(graph.executors, work, _ignore)
        failure = result.failure
        if failure is not None:
            raise ExecutorFailedError(
                failure.executor_id,
                failure.error_type,
                f"{failure.message} (in sub-workflow {graph.name!r} of executor {self.id!r})",
                failure.traceback,
                failure.attempts,
            ) from result.exception
        outcomes = sorted(result.outcomes, key=attrgetter("index"))
        routed = await route(graph, outcomes, execution.fan_in_buffers)
        changes = barrier_changes(outcomes, execution.pending_requests)
        changes.shared.apply_in_place(execution.shared_state)
        execution.executor_states.update(changes.executor_sets)
        execution.superstep = superstep
        execution.messages = routed.deliveries
        execution.fan_in_buffers = routed.fan_in_buffers
        if changes.pending_requests is not None:
            execution.pending_requests = changes.pending_requests
        await self._pass_on(outcomes, routed.dropped, ctx)

    async def _pass_on(
        self, outcomes: list[DeliveryOutcome], dropped: list[str], ctx: WorkflowContext
    ) -> None:
        """The child's outputs become messages, its requests the parent's, its events the parent's events."""
        for outcome in outcomes:
            asked = {request.request_id: request for request in outcome.requests}
            for event in outcome.emitted:
                if event.type == EventType.OUTPUT:
                    await ctx.send_message(event.data)
                elif event.type == EventType.REQUEST_INFO and event.request_id in asked:
                    request = asked[event.request_id]
                    await ctx.request_info(request.data, request.response_type, request_id=request.request_id)
                else:
                    await ctx.add_event(
                        dataclasses.replace(
                            event, executor_id=f"{self.id}/{event.executor_id}", superstep=None
                        )
                    )
        reasons = dropped + [outcome.dropped for outcome in outcomes if outcome.dropped]
        if reasons:
            await ctx.add_event(
                WorkflowEvent(
                    EventType.WARNING,
                    f"{len(reasons)} message(s) dropped in sub-workflow {self.subgraph.name!r}",
                    details={"dropped": len(reasons), "reasons": reasons},
                )
            )
