"""Send barrierflow's traces to an OpenTelemetry collector or Jaeger over OTLP/HTTP (docs/operations.md).

List this module where barrierflow imports your workflows, and set the standard OpenTelemetry variables:

    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318  OTEL_SERVICE_NAME=barrierflow-worker
    BARRIERFLOW_IMPORTS=examples.otlp_tracing,my.workflows barrierflow worker       # Celery workers
    barrierflow coordinator --celery -I examples.otlp_tracing -I my.workflows      # coordinators

Without ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) it installs nothing and
tracing stays off. Spans are batched (``BatchSpanProcessor``: ``OTEL_BSP_*`` variables) and sampled as
``OTEL_TRACES_SAMPLER`` says; the resource comes from ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``.
Needs ``pip install 'barrierflow[otel]' opentelemetry-exporter-otlp-proto-http``. Copy it into your own code
to add other exporters or processors: the only thing barrierflow needs is a tracer provider set in the process.
"""

from __future__ import annotations

import os

if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    # a Celery prefork child gets its own export thread after the fork (the SDK re-starts it)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
