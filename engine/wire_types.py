"""The engine's own records that cross process boundaries, registered with the codec under stable names.

Stable names (not module paths) so a refactor of the engine never makes stored checkpoints undecodable.
"""

from __future__ import annotations

from . import codec
from .dispatch import ExecutorBatch, SuperstepWork
from .events import Lifecycle, RunState, WorkflowEvent
from .messages import Delivery, PendingRequest
from .outcome import DeliveryOutcome, FailureInfo

for _cls, _name in (  # leaves first: registering a record also registers its field types
    (PendingRequest, "barrierflow.PendingRequest"),
    (Delivery, "barrierflow.Delivery"),
    (RunState, "barrierflow.RunState"),
    (Lifecycle, "barrierflow.Lifecycle"),
    (WorkflowEvent, "barrierflow.WorkflowEvent"),
    (FailureInfo, "barrierflow.FailureInfo"),
    (DeliveryOutcome, "barrierflow.DeliveryOutcome"),
    (ExecutorBatch, "barrierflow.ExecutorBatch"),
    (SuperstepWork, "barrierflow.SuperstepWork"),
):
    codec.register_type(_cls, name=_name)
