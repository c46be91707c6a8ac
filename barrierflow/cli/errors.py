"""What the CLI tells a user when something goes wrong, and with which exit code.

Every command runs inside ``reported()``: an expected failure becomes one clear line on stderr (and a JSON
``error`` line on stdout in JSON mode) and a documented exit code; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from barrierflow.engine.errors import (
    CheckpointDecodeError,
    CheckpointNotFoundError,
    ConvergenceError,
    ExecutorFailedError,
    GraphSignatureMismatchError,
    ReservationLostError,
    RunCancelledError,
    StoreError,
    UnknownRequestError,
    WorkflowError,
    WorkflowNotIdleError,
    WorkflowRunInProgressError,
    WorkflowValidationError,
)

#: The run finished; it may be waiting on requests (that is a normal pause, not an error).
EXIT_OK = 0
#: The workflow failed: a handler raised, or ``max_supersteps`` was hit with work left.
EXIT_WORKFLOW_FAILED = 1
#: ``barrierflow workers``: a worker asked for (``--node``, ``--queue``) is not live: the health check failed.
EXIT_NOT_LIVE = 1
#: Bad input: unknown module/factory, bad JSON, unknown request id or checkpoint, wrongly typed answer.
EXIT_BAD_INPUT = 2
#: Redis (the store or the Celery broker) cannot be reached.
EXIT_UNREACHABLE = 3
#: The instance is not in a state that allows this: reserved by another run, work still queued, other graph.
EXIT_CONFLICT = 4
#: ``--wait`` / ``runs wait`` gave up: the run has not ended yet (it goes on; wait again or cancel it).
EXIT_TIMEOUT = 5
#: Interrupted (Ctrl-C): the instance's state is its latest checkpoint.
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 done (also when waiting on requests), 1 workflow failed, 2 bad input, "
    "3 Redis unreachable, 4 instance busy or in the wrong state, 5 still running when a wait timed out, "
    "130 interrupted."
)


class CliError(Exception):
    """A failure the CLI explains in one message."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Session:
    """Per-invocation switches that the error report needs (set by the command before it works)."""

    debug = False
    json = False


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an exception."""
    if isinstance(exc, CliError):
        return exc.exit_code, str(exc)
    if isinstance(exc, ExecutorFailedError):
        return (
            EXIT_WORKFLOW_FAILED,
            f"workflow failed: {exc} (rerun with --debug for the handler's traceback)",
        )
    if isinstance(exc, RunCancelledError):
        return EXIT_WORKFLOW_FAILED, f"run cancelled: {exc}"
    if isinstance(exc, TimeoutError):
        return (
            EXIT_TIMEOUT,
            f"timed out: {exc or 'the run has not ended yet'} (it goes on: wait again, or cancel it)",
        )
    if isinstance(exc, ConvergenceError):
        return EXIT_WORKFLOW_FAILED, f"workflow did not finish: {exc}"
    if isinstance(exc, UnknownRequestError):
        return EXIT_BAD_INPUT, f"unknown request: {exc}"
    if isinstance(exc, CheckpointNotFoundError):
        return EXIT_BAD_INPUT, f"{exc}; list them with: barrierflow checkpoints list INSTANCE"
    if isinstance(exc, CheckpointDecodeError):
        hint = ""
        if "not registered" in str(exc):
            hint = " (with the CLI: --import MODULE, or BARRIERFLOW_IMPORTS=MODULE)"
        return EXIT_BAD_INPUT, f"cannot decode the checkpoint: {exc}{hint}"
    if isinstance(exc, WorkflowValidationError):
        return EXIT_BAD_INPUT, f"invalid workflow: {exc}"
    if isinstance(exc, StoreError):
        return EXIT_UNREACHABLE, f"Redis failed: {exc}"
    if isinstance(exc, WorkflowRunInProgressError | ReservationLostError | GraphSignatureMismatchError):
        return EXIT_CONFLICT, str(exc)
    if isinstance(exc, WorkflowNotIdleError):
        return EXIT_CONFLICT, f"{exc} (barrierflow run MODULE:FACTORY --instance ID --redis URL continues it)"
    if isinstance(exc, WorkflowError):
        return EXIT_WORKFLOW_FAILED, f"workflow error: {exc}"
    if _is_connection_error(exc):
        return EXIT_UNREACHABLE, f"cannot reach Redis: {type(exc).__name__}: {exc}"
    if isinstance(exc, LookupError) and not isinstance(exc, KeyError):  # an unknown run or instance
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, TypeError | ValueError):  # the engine's checks before anything runs
        return EXIT_BAD_INPUT, str(exc)
    return (
        EXIT_WORKFLOW_FAILED,
        f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
    )


def _is_connection_error(exc: BaseException) -> bool:
    names = {f"{k.__module__}.{k.__name__}" for k in type(exc).__mro__}
    return bool(
        names
        & {
            "redis.exceptions.ConnectionError",
            "redis.exceptions.TimeoutError",
            "kombu.exceptions.OperationalError",
            "builtins.ConnectionError",
        }
    )


def report(exc: BaseException) -> int:
    """Print the message for ``exc`` (and the traceback with ``--debug``); return the exit code."""
    code, message = classify(exc)
    if Session.debug:
        traceback.print_exception(exc, file=sys.stderr)
        remote = getattr(exc, "traceback", "")
        if remote:
            print(f"--- traceback of the handler ---\n{remote}", file=sys.stderr)
    if Session.json:
        print(json.dumps({"type": "error", "message": message, "exit_code": code}), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


@contextmanager
def reported() -> Iterator[None]:
    """Turn any failure inside into a message and ``typer.Exit(code)``."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        print("interrupted: the instance's state is its latest checkpoint", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except SystemExit:
        raise
    except BaseException as exc:
        raise typer.Exit(report(exc)) from None
