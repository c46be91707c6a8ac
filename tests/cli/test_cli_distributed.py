"""The whole distributed path from the command line: a real ``barrierflow worker`` process, a real Redis,
and ``barrierflow run --celery`` coordinators in their own processes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import ROOT, barrierflow_argv, json_lines, run_cli

IMPORTS = ["examples.document_pipeline", "examples.approval_flow", "examples.iterative_loop"]


@pytest.fixture
def celery_env(redis_url: str) -> Iterator[dict[str, str]]:
    """Environment of the worker and the coordinators: this test's own queue on the session's Redis."""
    queue = f"bfcli-{uuid.uuid4().hex[:8]}"
    yield {
        "BARRIERFLOW_REDIS_URL": redis_url,
        "BARRIERFLOW_BROKER_URL": redis_url,
        "BARRIERFLOW_QUEUE": queue,
    }
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cli_worker(celery_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    """``barrierflow worker`` as a user starts it (its own process group, so stopping it stops its pool)."""
    node = f"cli-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "worker.log"
    argv = [
        *barrierflow_argv(),
        "worker",
        "--concurrency",
        "2",
        "--loglevel",
        "warning",
        "--hostname",
        f"{node}@%h",
    ]
    for module in IMPORTS:
        argv += ["--import", module]
    argv += ["--", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **celery_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_worker(proc, celery_env, log_path)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _wait_for_worker(
    proc: subprocess.Popen, env: dict[str, str], log_path: Path, timeout: float = 40
) -> None:
    """Until a worker consuming our queue answers Celery's ping (asked with the same app configuration)."""
    probe = (
        "from barrierflow.workers.app import app; import sys; "
        "r = app.control.ping(timeout=1.0) or []; sys.exit(0 if r else 1)"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"barrierflow worker exited early:\n{log_path.read_text(errors='replace')}")
        ping = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            timeout=30,
        )
        if ping.returncode == 0:
            return
    raise RuntimeError(
        f"barrierflow worker did not answer in {timeout} s:\n{log_path.read_text(errors='replace')}"
    )


@pytest.mark.timeout(180)
def test_document_pipeline_runs_on_a_cli_worker(
    cli_worker: subprocess.Popen, celery_env: dict[str, str], redis_url: str, real_redis_prefix: str
) -> None:
    doc = json.dumps({"title": "Dist", "text": "Workers analyse documents. Redis keeps checkpoints."})
    opts = ["--redis", redis_url, "--prefix", real_redis_prefix]
    result = run_cli(
        "run",
        "examples.document_pipeline:document_pipeline",
        "--input",
        doc,
        "--instance",
        "d1",
        *opts,
        "--celery",
        env=celery_env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert records[-1]["status"] == "idle"
    [report] = records[-1]["outputs"]
    assert report["title"] == "Dist"
    assert report["words"] == 6
    assert report["analysers"] == ["word_count", "keywords", "summary"]
    invoked = {r["executor_id"] for r in records if r["type"] == "executor_invoked"}
    assert invoked == {"ingest", "word_count", "keywords", "summary", "report"}
    assert "no Celery worker answered" not in result.stderr

    listed = run_cli("checkpoints", "list", "d1", *opts, "--json", "-I", "examples.document_pipeline")
    assert [c["superstep"] for c in json_lines(listed.stdout)] == [3, 2, 1, 0]
    [status] = json_lines(run_cli("status", "d1", *opts, "--json", "-I", "examples.document_pipeline").stdout)
    assert status["lock"]["held"] is False
    assert status["state"] == "idle"


@pytest.mark.timeout(180)
def test_approval_round_trip_on_a_cli_worker(
    cli_worker: subprocess.Popen, celery_env: dict[str, str], redis_url: str, real_redis_prefix: str
) -> None:
    opts = ["--redis", redis_url, "--prefix", real_redis_prefix]
    first = run_cli(
        "run",
        "examples.approval_flow:approval_flow",
        "--input",
        '"launch"',
        "--instance",
        "a1",
        *opts,
        "--celery",
        env=celery_env,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    [pending] = [r for r in json_lines(first.stdout) if r["type"] == "pending_request"]
    argv = shlex.split(pending["command"])
    assert "--celery" in argv
    answer = run_cli(*argv[1:], env=celery_env, timeout=120)
    assert answer.returncode == 0, answer.stderr
    done = json_lines(answer.stdout)[-1]
    assert done["status"] == "idle"
    assert done["outputs"][0]["published"] is True
