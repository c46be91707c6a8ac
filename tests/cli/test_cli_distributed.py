"""The whole distributed path from the command line: a real ``barrierflow worker`` process, a real Redis,
and ``barrierflow run --celery`` coordinators in their own processes."""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import ROOT, barrierflow_argv, json_lines, run_cli
from tests.cli_worker import CliWorker, start_cli_worker
from tests.conftest import delete_prefix
from tests.redis_hygiene import SESSION

DEAD_REDIS = "redis://127.0.0.1:1/0"

# A module that imports barrierflow's Celery app before anything configures it, as a user's module may: the
# app has then read the environment (a dead Redis here), and only the flags can put it right.
APP_FIRST = """
import barrierflow.workers  # noqa: F401 - configured from the environment, right now
from examples.approval_flow import approval_flow  # noqa: F401
from examples.document_pipeline import document_pipeline  # noqa: F401
"""


@pytest.fixture(scope="module")
def app_first(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("app_first")
    (where / "app_first.py").write_text(APP_FIRST)
    return where


@pytest.fixture(scope="module")
def cli_worker(
    redis_url: str, app_first: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CliWorker]:
    """``barrierflow worker --redis URL`` whose environment names a dead Redis: the flag must win. The
    coordinators use its prefix (``opts``), so their pre-flight finds it in the worker registry."""
    worker = start_cli_worker(
        barrierflow_argv(),
        redis_url=redis_url,
        imports=["app_first"],
        cwd=ROOT,
        log=tmp_path_factory.mktemp("cli_worker") / "worker.log",
        prefix=f"bftest-{SESSION}-cliw-{uuid.uuid4().hex[:8]}",
        env={"BARRIERFLOW_REDIS_URL": DEAD_REDIS, "PYTHONPATH": str(app_first)},
    )
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
        delete_prefix(redis_url, worker.prefix)


@pytest.fixture
def opts(cli_worker: CliWorker, redis_url: str) -> list[str]:
    return ["--redis", redis_url, "--prefix", cli_worker.prefix]


@pytest.fixture
def celery_env(cli_worker: CliWorker, app_first: Path) -> dict[str, str]:
    """The coordinators' environment: the worker's queue, and a dead Redis that their flags override."""
    return {
        "BARRIERFLOW_REDIS_URL": DEAD_REDIS,
        "BARRIERFLOW_QUEUE": cli_worker.queue,
        "PYTHONPATH": str(app_first),
    }


@pytest.mark.timeout(180)
def test_document_pipeline_runs_on_a_cli_worker(celery_env: dict[str, str], opts: list[str]) -> None:
    doc = json.dumps({"title": "Dist", "text": "Workers analyse documents. Redis keeps checkpoints."})
    result = run_cli(
        "run",
        "app_first:document_pipeline",
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
    assert "warning" not in result.stderr  # the pre-flight found the worker in the registry

    listed = run_cli("checkpoints", "list", "d1", *opts, "--json", "-I", "examples.document_pipeline")
    assert [c["superstep"] for c in json_lines(listed.stdout)] == [3, 2, 1, 0]
    [status] = json_lines(run_cli("status", "d1", *opts, "--json", "-I", "examples.document_pipeline").stdout)
    assert status["lock"]["held"] is False
    assert status["state"] == "idle"


@pytest.mark.timeout(180)
def test_approval_round_trip_on_a_cli_worker(celery_env: dict[str, str], opts: list[str]) -> None:
    first = run_cli(
        "run",
        "app_first:approval_flow",
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
