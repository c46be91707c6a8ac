"""Fixtures of the observability tests: spans captured in this process, and the span tree helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tests.observability_flows  # noqa: F401 - registers the workflows in this process too


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing on in this process for one test: an SDK provider whose spans go to an in-memory exporter.

    OpenTelemetry lets a process set its provider once; the fixture puts the API's globals back afterwards, so
    the other tests run with tracing off, as barrierflow does by default.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def as_records(finished: Any) -> list[dict[str, Any]]:
    """SDK spans as the plain records ``tests/otel_capture.py`` writes (one shape for every test)."""
    from tests.otel_capture import span_record

    return [span_record(span) for span in finished]


def children(records: list[dict[str, Any]], parent: dict[str, Any], name: str | None = None) -> list[dict]:
    return [
        r
        for r in records
        if r["parent_id"] == parent["span_id"]
        and r["trace_id"] == parent["trace_id"]
        and (name is None or r["name"] == name)
    ]


def named(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r["name"] == name]
