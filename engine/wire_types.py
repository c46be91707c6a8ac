"""The engine's own records that are stored or cross process boundaries, registered with the codec by name.

Stable names (not module paths) so a refactor of the engine never makes stored checkpoints undecodable.
Only records that are encoded *as records* are here: checkpoints hold deliveries and requests, events hold
run states, a worker's result holds its handler's ``FailureInfo``, and a ``WorkflowExecutor``'s executor state
holds the ``ChildExecution``s that wait for answers. A worker's outcomes and deliveries
travel as plain field lists (``workers/wire.py``), so they need no registration.
"""

from __future__ import annotations

from . import codec
from .events import Lifecycle, RunState, WorkflowEvent
from .messages import Delivery, PendingRequest
from .outcome import FailureInfo
from .subworkflow import ChildExecution

for _cls, _name in (  # leaves first: registering a record also registers its field types
    (PendingRequest, "barrierflow.PendingRequest"),
    (Delivery, "barrierflow.Delivery"),
    (RunState, "barrierflow.RunState"),
    (Lifecycle, "barrierflow.Lifecycle"),
    (WorkflowEvent, "barrierflow.WorkflowEvent"),
    (FailureInfo, "barrierflow.FailureInfo"),
    (ChildExecution, "barrierflow.ChildExecution"),
):
    codec.register_type(_cls, name=_name)
