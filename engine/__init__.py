"""barrierflow's engine: executors, the graph builder, the superstep runner, checkpoints and their codec.

It imports neither redis nor celery: ``broker`` and ``workers`` plug into its two seams, ``Store`` and
``Dispatcher``.
"""

from . import wire_types as _wire_types  # noqa: F401 - registers the engine's records with the codec
from .builder import WorkflowBuilder
from .checkpoint import Checkpoint
from .codec import register_type
from .context import WorkflowContext
from .dispatch import Dispatcher, LocalDispatcher
from .edges import Case, Default
from .errors import (
    CheckpointDecodeError,
    CheckpointNotFoundError,
    ConvergenceError,
    ExecutorFailedError,
    GraphSignatureMismatchError,
    ReservationLostError,
    RunCancelledError,
    SerializationError,
    StoreError,
    UnknownRequestError,
    WorkflowError,
    WorkflowNotIdleError,
    WorkflowRunInProgressError,
    WorkflowValidationError,
)
from .events import EventType, Lifecycle, RunResult, RunState, WorkflowEvent
from .executor import Executor, executor, handler, response_handler
from .memory_store import MemoryStore
from .registry import register_workflow
from .retry import RetryPolicy
from .run_session import WorkflowStream
from .store import Store
from .subworkflow import WorkflowExecutor
from .workflow import Workflow

__all__ = [
    "Case",
    "Checkpoint",
    "CheckpointDecodeError",
    "CheckpointNotFoundError",
    "ConvergenceError",
    "Default",
    "Dispatcher",
    "EventType",
    "Executor",
    "ExecutorFailedError",
    "GraphSignatureMismatchError",
    "Lifecycle",
    "LocalDispatcher",
    "MemoryStore",
    "ReservationLostError",
    "RetryPolicy",
    "RunCancelledError",
    "RunResult",
    "RunState",
    "SerializationError",
    "Store",
    "StoreError",
    "UnknownRequestError",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowEvent",
    "WorkflowExecutor",
    "WorkflowNotIdleError",
    "WorkflowRunInProgressError",
    "WorkflowStream",
    "WorkflowValidationError",
    "executor",
    "handler",
    "register_type",
    "register_workflow",
    "response_handler",
]
