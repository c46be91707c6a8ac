"""Running one executor's deliveries of a superstep: the code a local dispatcher and a Celery worker share."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING

from .context import MISSING, ExecutorView, WorkflowContext
from .events import EventType, WorkflowEvent
from .outcome import DeliveryOutcome, FailureInfo

if TYPE_CHECKING:
    from .dispatch import ExecutorBatch, SuperstepWork
    from .executor import Executor


class BatchFailed(Exception):
    """A handler raised; carries its ``FailureInfo`` and delivery index (the original is ``__cause__``)."""

    def __init__(self, info: FailureInfo, index: int) -> None:
        super().__init__(f"{info.executor_id}: {info.error_type}: {info.message}")
        self.info = info
        self.index = index


async def run_executor_batch(
    executors: Mapping[str, Executor],
    work: SuperstepWork,
    batch: ExecutorBatch,
    outcomes: list[DeliveryOutcome],
    emit: Callable[[WorkflowEvent], None],
) -> None:
    """Deliver ``batch`` one message at a time, appending each delivery's outcome to ``outcomes``.

    Raises ``BatchFailed`` on the first handler exception (the outcome of the failed delivery, with ``error``
    set, is appended first so a remote caller can ship it back).
    """
    executor_id = batch.executor_id
    executor = executors[executor_id]
    superstep, run_id, instance_id = work.superstep, work.run_id, work.instance_id
    view = ExecutorView(work.shared_state, work.executor_states.get(executor_id, MISSING))
    for index, delivery in batch.deliveries:
        outcome = DeliveryOutcome(index, executor_id)
        outcomes.append(outcome)
        request = delivery.request
        if request is None:
            found = executor.handler_for(delivery.message)
        else:
            found = executor.response_handler_for(request.data, delivery.message)
        if found is None:
            outcome.dropped = f"{executor_id} has no handler for {type(delivery.message).__name__}"
            continue
        spec, bound = found
        ctx = WorkflowContext(
            executor_id, run_id, instance_id, superstep, list(delivery.source_ids), outcome, view
        )
        emit(WorkflowEvent(EventType.EXECUTOR_INVOKED, None, executor_id, superstep))
        try:
            if request is None:
                result = bound(delivery.message, ctx) if spec.takes_context else bound(delivery.message)
            elif spec.takes_context:
                result = bound(request.data, delivery.message, ctx)
            else:
                result = bound(request.data, delivery.message)
            if type(result) is CoroutineType or (result is not None and inspect.isawaitable(result)):
                await result  # async handlers (sync ones return None: nothing to await)
        except Exception as exc:
            info = FailureInfo(executor_id, type(exc).__name__, str(exc), traceback.format_exc())
            outcome.error = info
            emit(
                WorkflowEvent(
                    EventType.EXECUTOR_FAILED,
                    info.message,
                    executor_id=executor_id,
                    superstep=superstep,
                    details={"error_type": info.error_type},
                )
            )
            raise BatchFailed(info, index) from exc
        emit(WorkflowEvent(EventType.EXECUTOR_COMPLETED, None, executor_id, superstep))
