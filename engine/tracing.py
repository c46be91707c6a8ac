"""OpenTelemetry spans for the engine, without the engine importing opentelemetry.

This module is the one optional-import shim of the engine (docs/operations.md): it never imports
``opentelemetry`` itself. Tracing is on in a process when the application imported ``opentelemetry.trace`` and
installed a tracer provider (``trace.set_tracer_provider(TracerProvider(...))``, what ``barrierflow[otel]``
makes possible: for Celery workers, a module listed in ``BARRIERFLOW_IMPORTS``). ``tracer()`` looks that up
once per run; when it answers ``None`` the run builds no span object at all, and the hot paths test one local
for ``None``. So embedded use without the extra pays nothing, and ``import opentelemetry`` never happens.

The engine creates spans with an explicit parent (``Tracing.parent``) and never makes them *current*
(contextvars): superstep batches start eagerly (``engine/eager.py``) and move between contexts, where attaching
and detaching a context would not pair up. The names and attributes are API (DESIGN.md §6):
``barrierflow.run`` → ``barrierflow.superstep`` → ``barrierflow.deliver`` → ``barrierflow.handler``, plus
``barrierflow.checkpoint.write`` (and, outside the engine, ``lease.acquire``, ``queue.claim``,
``queue.submit``), attributes prefixed ``barrierflow.``.

Context crosses processes as a W3C ``traceparent`` string (``traceparent()`` / ``Tracing.from_traceparent``):
in Celery task headers and in run-queue entries.
"""

from __future__ import annotations

import sys
from typing import Any

#: The tracer's (instrumentation scope's) name.
TRACER_NAME = "barrierflow"

RUN, SUPERSTEP, DELIVER, HANDLER = (
    "barrierflow.run",
    "barrierflow.superstep",
    "barrierflow.deliver",
    "barrierflow.handler",
)
CHECKPOINT_WRITE, LEASE_ACQUIRE = "barrierflow.checkpoint.write", "barrierflow.lease.acquire"
QUEUE_CLAIM, QUEUE_SUBMIT = "barrierflow.queue.claim", "barrierflow.queue.submit"

_cached: tuple[Any, Any] = (None, None)  # (provider, its barrierflow tracer)


def tracer() -> Any | None:
    """The ``barrierflow`` tracer of the process's tracer provider, or ``None`` when tracing is off.

    Off: opentelemetry was never imported, or no provider was installed (the API's proxy or no-op provider).
    Cheap enough to ask once per run: a ``sys.modules`` lookup and, when opentelemetry is loaded, one call.
    """
    global _cached
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if provider is _cached[0]:
        return _cached[1]
    kind = type(provider).__name__
    found = (
        None if kind in ("ProxyTracerProvider", "NoOpTracerProvider") else provider.get_tracer(TRACER_NAME)
    )
    _cached = (provider, found)
    return found


def attributes(**values: Any) -> dict[str, Any]:
    """``barrierflow.``-prefixed span attributes; ``None`` values left out (OpenTelemetry refuses them)."""
    return {f"barrierflow.{key}": value for key, value in values.items() if value is not None}


class Tracing:
    """A tracer and the span context the next spans hang under (``parent``: an opentelemetry ``Context``)."""

    __slots__ = ("parent", "tracer")

    def __init__(self, tracer: Any, parent: Any = None) -> None:
        self.tracer = tracer
        self.parent = parent

    def start(self, name: str, attrs: dict[str, Any] | None = None, links: Any = None) -> Any:
        """A new span, child of ``parent`` (a root when ``parent`` is ``None``); the caller ends it."""
        return self.tracer.start_span(name, context=self.parent, attributes=attrs, links=links)

    def under(self, span: Any) -> Tracing:
        """A ``Tracing`` whose spans are children of ``span``."""
        return Tracing(self.tracer, sys.modules["opentelemetry.trace"].set_span_in_context(span))

    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of ``parent``'s span (what crosses to another process)."""
        span = sys.modules["opentelemetry.trace"].get_current_span(self.parent)
        return traceparent(span)

    @classmethod
    def from_traceparent(cls, tracer: Any, header: str | None) -> Tracing:
        """Spans under a remote parent named by a ``traceparent`` header (a root if it is missing or bad)."""
        context = remote_context(header)
        if context is None:
            return cls(tracer)
        trace = _trace()
        return cls(tracer, trace.set_span_in_context(trace.NonRecordingSpan(context)))


def _trace() -> Any:
    return sys.modules["opentelemetry.trace"]


def traceparent(span: Any) -> str | None:
    """``00-<trace id>-<span id>-<flags>`` of ``span``, or ``None`` for an invalid (non-recording) one."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def trace_id(span: Any) -> str:
    """The hex trace id of ``span`` (what JSON log lines carry as ``trace_id``)."""
    return f"{span.get_span_context().trace_id:032x}"


def remote_context(header: str | None) -> Any | None:
    """The ``SpanContext`` a ``traceparent`` names (``is_remote``), ``None`` if it is missing or malformed."""
    if not header or not isinstance(header, str):
        return None
    parts = header.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    trace = _trace()
    context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
    return context if context.is_valid else None


def links_to(header: str | None) -> list[Any] | None:
    """A span link to the span a ``traceparent`` names (how a run points at its submission), or ``None``."""
    context = remote_context(header)
    return None if context is None else [_trace().Link(context)]


def end(span: Any, error: BaseException | None = None) -> None:
    """End ``span``; with ``error`` it records the exception and an error status first."""
    if error is not None:
        span.record_exception(error)
        span.set_status(_trace().Status(_trace().StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
