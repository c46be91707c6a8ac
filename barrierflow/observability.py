"""Serving barrierflow's metrics and structured logs from a process: a coordinator, the HTTP server, your own.

Metrics (``broker/metrics.py`` defines them; docs/operations.md lists them) are in ``prometheus_client``'s
default registry. A process exposes them in one of three ways:

* ``serve_metrics(port, host="127.0.0.1")``: a plain HTTP server on its own thread
  (``barrierflow coordinator --metrics-port N``);
* ``metrics_app()``: an ASGI app to mount in a web server (Starlette/FastAPI:
  ``app.mount("/metrics", metrics_app())``, which answers at ``/metrics/``);
* ``metrics_response()``: ``(body, content type)`` for a route of your own (``GET /metrics`` without redirect).

``watch_queue(redis_url, prefix)`` adds the queue's figures, read from Redis at scrape time, so any process
(every replica of the server, every coordinator) reports the same depth and oldest age.

Traces need no call here: install a tracer provider in the process (``engine/tracing.py``). Logs:
``log_to_stderr(level, "json")`` (what ``--log-format json`` does) writes one JSON object per line with the
``run_id``, ``instance_id`` and ``trace_id`` of the run a line is about.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, make_asgi_app, start_http_server

from barrierflow.broker.metrics import QueueCollector, register_queue_collector
from barrierflow.engine.log_context import LOG_FORMATS, JsonFormatter, log_handler

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "log_to_stderr",
    "metrics_app",
    "metrics_response",
    "serve_metrics",
    "watch_queue",
]


def watch_queue(redis_url: str, prefix: str) -> QueueCollector:
    """Report ``barrierflow_queue_depth`` and ``barrierflow_queue_oldest_age_seconds`` of the run queue at
    ``redis_url`` under ``prefix`` (read at scrape time; registered once per Redis and prefix)."""
    return register_queue_collector(redis_url, prefix)


def serve_metrics(port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server (``.shutdown()`` stops it).

    Binds 127.0.0.1 unless told otherwise: metrics name workflows and executors. ``port=0`` picks a free port
    (``server.server_port``).
    """
    server, _thread = start_http_server(port, addr=host)
    return server


def metrics_app() -> Any:
    """An ASGI app that answers with the metrics (``app.mount("/metrics", metrics_app())``)."""
    return make_asgi_app(REGISTRY)


def metrics_response() -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape, for a route of your own (the text exposition format)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def log_to_stderr(level: str | int = "INFO", log_format: str = "text") -> None:
    """Send the ``barrierflow`` logs (and the root logger's) to stderr, as text or JSON lines.

    Replaces handlers an earlier call installed, so calling it again switches the format.
    """
    handler = log_handler(log_format, sys.stderr)
    handler.set_name("barrierflow-stderr")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "barrierflow-stderr"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
