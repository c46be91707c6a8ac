"""The dispatcher seam: who runs one superstep's deliveries.

The runner plans a superstep as ``ExecutorBatch``es (all deliveries of one executor, in delivery order, so an
executor handles them one at a time) and hands them to a dispatcher. ``LocalDispatcher`` runs them in this
process; ``workers.CeleryDispatcher`` ships them to Celery workers. Both return the same ``SuperstepResult``;
the runner alone commits it at the barrier.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import WorkflowEvent
from .executor import Executor
from .execution import BatchFailed, run_executor_batch
from .messages import Delivery
from .outcome import DeliveryOutcome, FailureInfo

EventSink = Callable[[WorkflowEvent], None]


@dataclass(slots=True)
class ExecutorBatch:
    """The deliveries of one executor in one superstep, as ``(index in the superstep order, delivery)``."""

    executor_id: str
    deliveries: list[tuple[int, Delivery]]


@dataclass(slots=True)
class SuperstepWork:
    """Everything needed to run one superstep anywhere: the batches and the state at the last barrier."""

    instance_id: str
    run_id: str
    superstep: int
    workflow_name: str
    graph_signature: str
    batches: list[ExecutorBatch]
    shared_state: Mapping[str, Any]
    executor_states: Mapping[str, Any]
    lease_token: str = ""
    epoch: int = 0


@dataclass(slots=True)
class SuperstepResult:
    """Outcomes of the deliveries that ran, and the failure that stopped the superstep, if any.

    ``exception`` is the original exception when the handler ran in this process (it becomes the
    ``__cause__`` of ``ExecutorFailedError``); remote failures carry only ``failure``.
    """

    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    failure: FailureInfo | None = None
    exception: BaseException | None = None


class Dispatcher(ABC):
    """Runs the deliveries of one superstep and returns their outcomes (it never commits anything)."""

    @abstractmethod
    async def run_superstep(
        self, executors: Mapping[str, Executor], work: SuperstepWork, emit: EventSink
    ) -> SuperstepResult:
        """Run ``work``; report ``executor_invoked/completed/failed`` through ``emit`` as they happen."""

    async def aclose(self) -> None:
        """Release resources (connections); the default holds none."""


class LocalDispatcher(Dispatcher):
    """Runs every executor's batch in this process, executors concurrently, each one's deliveries in order.

    On the first failure the other batches are cancelled (``asyncio.TaskGroup``), and their partial outcomes
    are discarded by the runner along with everything else of the superstep.
    """

    async def run_superstep(
        self, executors: Mapping[str, Executor], work: SuperstepWork, emit: EventSink
    ) -> SuperstepResult:
        result = SuperstepResult()
        outcomes = result.outcomes
        try:
            if len(work.batches) == 1:  # the common chain case: no task to spawn
                await run_executor_batch(executors, work, work.batches[0], outcomes, emit)
            else:
                async with asyncio.TaskGroup() as group:
                    for batch in work.batches:
                        group.create_task(run_executor_batch(executors, work, batch, outcomes, emit))
        except BatchFailed as failed:
            result.failure, result.exception = failed.info, failed.__cause__
        except BaseExceptionGroup as group_error:
            failures = [e for e in group_error.exceptions if isinstance(e, BatchFailed)]
            if len(failures) != len(group_error.exceptions):
                raise
            first = min(failures, key=lambda f: f.index)
            result.failure, result.exception = first.info, first.__cause__
        return result
