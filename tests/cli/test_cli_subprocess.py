"""The installed ``barrierflow`` command in real processes: embedded runs, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.conftest import ROOT, json_lines, run_cli

RUNS = [
    ("examples.text_pipeline:text_pipeline", '"hello"', "OLLEH"),
    (
        "examples.document_pipeline:document_pipeline",
        '{"title": "T", "text": "One two. Three."}',
        '"words": 3',
    ),
    ("examples.iterative_loop:guess_the_number", '{"secret": 612, "high": 1000}', '"secret": 612'),
    ("examples.approval_flow:approval_flow", '"docs"', '"type": "pending_request"'),
]


@pytest.mark.parametrize(("target", "payload", "expected"), RUNS)
def test_every_example_runs_embedded_in_a_real_process(target: str, payload: str, expected: str) -> None:
    result = run_cli("run", target, "--input", payload)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    records = json_lines(result.stdout)  # stdout is a pipe, not a TTY: JSON lines without --json
    assert records[-1]["type"] == "result"


def test_the_readme_first_command() -> None:
    result = run_cli("run", "examples.text_pipeline:text_pipeline", "--input", '"hello"')
    assert result.returncode == 0
    assert json_lines(result.stdout)[-1]["outputs"] == ["OLLEH"]


def test_python_dash_m_works_too() -> None:
    for module in ("barrierflow.cli", "barrierflow.cli.main"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "graph", "examples.text_pipeline:text_pipeline"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("flowchart TD")


ERRORS = [
    (["run", "examples.nothing:flow", "--input", "1"], 2, "no module named 'examples.nothing'"),
    (["run", "examples.text_pipeline:text_pipeline", "--input", "{bad"], 2, "--input is not valid JSON"),
    (["run", "examples.iterative_loop:guess_the_number", "--input", "0"], 1, "must lie in [1, 100]"),
    (
        ["run", "examples.text_pipeline", "--input", '"a"', "--redis", "redis://127.0.0.1:1/0"],
        3,
        "cannot reach Redis",
    ),
    (["run", "examples.approval_flow", "--instance", "x", "--respond", "r=true"], 2, "--redis URL"),
    (["worker", "--import", "examples.nothing"], 2, "no module named 'examples.nothing'"),
    (
        ["worker", "--import", "examples.text_pipeline", "--redis", "redis://127.0.0.1:1/0"],
        3,
        "cannot reach the Celery broker",
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "message"), ERRORS, ids=[f"{a[0]}->{c}" + str(i) for i, (a, c, _) in enumerate(ERRORS)]
)
def test_errors_in_a_real_process(argv: list[str], code: int, message: str) -> None:
    result = run_cli(*argv, env={"BARRIERFLOW_IMPORTS": ""})
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
