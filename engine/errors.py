"""Every error barrierflow raises on purpose.

One module, one hierarchy: callers catch ``WorkflowError`` for anything the engine decided, or a subclass for
the case they can act on. Each message names the thing that went wrong and, where there is one, what to do.
"""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    """Base of every error the engine raises deliberately."""


class WorkflowValidationError(WorkflowError):
    """The graph given to ``WorkflowBuilder.build()`` cannot run (the message names the executors)."""


class WorkflowRunInProgressError(WorkflowError):
    """The instance is reserved by another run; ``owner`` describes the holder when the store knows it."""

    def __init__(self, message: str, owner: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class WorkflowNotIdleError(WorkflowError):
    """Messages of an unfinished run are still queued: continue with ``run()`` or discard with a reset."""


class ConvergenceError(WorkflowError):
    """``max_supersteps`` was reached with work still queued; ``run()`` continues it."""


class ExecutorFailedError(WorkflowError):
    """A handler raised. Carries the remote details so it survives a trip through a worker process.

    ``attempts``: how many times the delivery was tried (its ``RetryPolicy`` ran out; 1 without one).
    """

    def __init__(
        self, executor_id: str, error_type: str, message: str, traceback: str = "", attempts: int = 1
    ) -> None:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"executor {executor_id!r} failed{tries}: {error_type}: {message}")
        self.executor_id = executor_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        self.attempts = attempts


class UnknownRequestError(WorkflowError, KeyError):
    """A response names a request id that is not pending on this instance."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(WorkflowError, KeyError):
    """No checkpoint with that id exists in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointDecodeError(WorkflowError):
    """Stored bytes do not decode, or name a type that is not registered. Stored data is left as it was."""


class GraphSignatureMismatchError(WorkflowError):
    """A checkpoint or task was made by a different graph than the one asked to use it."""


class SerializationError(WorkflowError, TypeError):
    """A value cannot be encoded; the message names where it sits (for example ``messages[2].payload``)."""


class ReservationLostError(WorkflowError):
    """The lease of this run ended (expired or taken over); the write was refused and nothing was written."""


class RunCancelledError(WorkflowError):
    """The run was stopped by ``RunQueue.cancel``: queued, it never started; running, it stopped at a barrier.

    The instance stays at that barrier with its queued work kept: ``run()`` continues it, a reset discards it.
    """


class StoreError(WorkflowError):
    """The store's backend failed (connection, wrong key type); the message names the operation."""
