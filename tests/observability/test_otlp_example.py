"""The tracing recipe of docs/operations.md: ``examples.otlp_tracing`` sends a run's spans over OTLP/HTTP."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_otlp_example_exports_a_runs_spans() -> None:
    bodies: list[bytes] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = (
        "import asyncio, examples.otlp_tracing, tests.observability_flows as f\n"
        "from barrierflow.engine.registry import workflow_factory\n"
        "wf = workflow_factory('obs_flaky')().build()\n"
        "asyncio.run(wf.run(f.job('otlp', fail=1)))\n"
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_SERVICE_NAME": "bftest-otlp",
        "PYTHONPATH": str(ROOT),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert bodies and all(path == "/v1/traces" for path, _ in bodies)  # flushed at exit
    sent = b"".join(body for _, body in bodies)
    for name in (
        b"barrierflow.run",
        b"barrierflow.superstep",
        b"barrierflow.deliver",
        b"barrierflow.handler",
    ):
        assert name in sent
    assert b"bftest-otlp" in sent  # the resource names the service


def test_without_an_endpoint_it_installs_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    script = "import examples.otlp_tracing\nfrom barrierflow.engine.tracing import tracer\nassert tracer() is None\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
