"""The ids a log line is about (run, instance, trace), carried in a context variable.

Whoever knows them sets them for the code it calls: a coordinator for each run it drives (``workers/
coordinator.py``), a Celery worker for each task. ``barrierflow.observability.JsonFormatter`` puts them at the
top level of each JSON log line (``run_id``, ``instance_id``, ``trace_id``), and a plain-text log can show them
through ``LogContextFilter``. The value is a small dict; a holder may add a key to it later (the trace id once
the run's span exists), and every task that copied the context sees the addition.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

LOG_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("barrierflow_log_context", default=None)


def set_log_context(**ids: Any) -> dict[str, Any]:
    """Make ``ids`` (``None`` values left out) the current log context; returns the dict, to add to later."""
    context = {key: value for key, value in ids.items() if value is not None}
    LOG_CONTEXT.set(context)
    return context


def log_context() -> dict[str, Any]:
    """The ids of the current context (empty when none is set)."""
    return LOG_CONTEXT.get() or {}


class LogContextFilter(logging.Filter):
    """Copies the current log context onto each record as attributes (``%(run_id)s`` in a format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
