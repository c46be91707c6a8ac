"""``barrierflow.observability`` without processes: what a server mounts at ``/metrics``, the submission
counter, the queue collector on fakeredis, and the JSON log lines with their ids."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import fakeredis
import pytest
from typer.testing import CliRunner

from barrierflow.broker import RedisStore, RunQueue
from barrierflow.broker.metrics import QueueCollector
from barrierflow.cli.main import app as cli
from barrierflow.engine.log_context import JsonFormatter, LogContextFilter, set_log_context
from barrierflow.observability import log_to_stderr, metrics_app, metrics_response
from tests.observability_flows import job


def sample(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


async def _asgi_get(app: Any) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_submissions_are_counted_and_served() -> None:
    store = RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), prefix="bftest-m")
    submitted = 'barrierflow_runs_total{state="submitted",workflow="obs_flaky"}'
    before = sample(metrics_response()[0].decode(), submitted)
    async with RunQueue(store) as runs:
        for n in range(3):
            await runs.submit("obs_flaky", job(f"m{n}"))
    body, content_type = metrics_response()
    assert content_type.startswith("text/plain")
    assert sample(body.decode(), submitted) == before + 3
    status, served = await _asgi_get(metrics_app())  # what a server mounts at /metrics
    assert status == 200
    assert sample(served.decode(), submitted) == before + 3
    await store.aclose()


async def test_queue_collector_counts_instances_waiting_for_a_coordinator() -> None:
    server = fakeredis.FakeServer()
    store = RedisStore(fakeredis.FakeAsyncRedis(server=server), prefix="bftest-q")
    async with RunQueue(store) as runs:
        collector = QueueCollector(fakeredis.FakeRedis(server=server), runs.ready_key)
        assert collector.figures() == (0, 0.0)  # no stream yet
        first = await runs.submit("obs_flaky", job("a"))
        await runs.submit("obs_flaky", job("b"))
        await runs.submit("obs_flaky", job("a2"), instance_id=first.instance_id)  # waits for its instance
        depth, age = collector.figures()
        assert depth == 2 and 0 <= age < 10
        families = {f.name: f.samples[0].value for f in collector.collect()}
        assert families["barrierflow_queue_depth"] == 2
    await store.aclose()


def test_json_lines_carry_the_ids_of_the_log_context() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("barrierflow.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("outside any run")
        ids = set_log_context(run_id="inst@0123456789abcdef", instance_id="inst", trace_id=None)
        ids["trace_id"] = "ab" * 16  # added once the run's span exists
        logger.info("inside %s", "a run")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        set_log_context()
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "outside any run" and "run_id" not in first and first["level"] == "WARNING"
    assert second["message"] == "inside a run"
    assert (second["run_id"], second["instance_id"], second["trace_id"]) == (
        "inst@0123456789abcdef",
        "inst",
        "ab" * 16,
    )
    assert second["logger"] == "barrierflow.test-json" and second["time"].endswith("Z")
    assert "ValueError: boom" in third["exception"]


def test_text_logs_can_show_the_ids_too() -> None:
    record = logging.LogRecord("barrierflow", logging.INFO, __file__, 1, "hello", None, None)
    set_log_context(run_id="r1", instance_id="i1")
    try:
        assert LogContextFilter().filter(record)
    finally:
        set_log_context()
    assert (record.run_id, record.instance_id) == ("r1", "i1")  # type: ignore[attr-defined]


def test_log_to_stderr_switches_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        log_to_stderr("INFO", "json")
        log_to_stderr("INFO", "json")  # again: replaces its handler, never doubles the lines
        logging.getLogger("barrierflow.coordinator").info("run x started")
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "barrierflow-stderr"]:
            root.removeHandler(handler)
        root.setLevel(level)
    lines = [line for line in capsys.readouterr().err.splitlines() if "run x started" in line]
    assert len(lines) == 1 and json.loads(lines[0])["logger"] == "barrierflow.coordinator"


def test_bad_log_format_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli, ["coordinator", "--log-format", "yaml", "--redis", "redis://127.0.0.1:1/0"]
    )
    assert result.exit_code == 2
    assert "--log-format" in result.output
