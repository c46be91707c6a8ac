"""The ids a log line is about (run, instance, trace), carried in a context variable.

Whoever knows them sets them for the code it calls: a coordinator for each run it drives (``workers/
coordinator.py``), a Celery worker for each task. ``barrierflow.observability.JsonFormatter`` puts them at the
top level of each JSON log line (``run_id``, ``instance_id``, ``trace_id``), and a plain-text log can show them
through ``LogContextFilter``. The value is a small dict; a holder may add a key to it later (the trace id once
the run's span exists), and every task that copied the context sees the addition.
"""

from __future__ import annotations

import json
import logging
import sys
import time
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the log context's ids
    (``run_id``, ``instance_id``, ``trace_id``, ...) at the top level, ``exception`` when there is one.

    ``trace_id`` comes from the log context, else from the current OpenTelemetry span if the application made
    one current (never importing opentelemetry: ``engine/tracing.py``).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(log_context())
        if "trace_id" not in entry:
            current = _current_trace_id()
            if current is not None:
                entry["trace_id"] = current
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def _current_trace_id() -> str | None:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_handler(log_format: str, stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) writing ``text`` or ``json`` lines."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler
