"""Helpers of the CLI tests: a typer runner, JSON-lines parsing, and the ``barrierflow`` script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stdout line is one JSON object with a ``type`` (the contract of ``--json``)."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict) and isinstance(record.get("type"), str), line
        records.append(record)
    return records


def barrierflow_argv() -> list[str]:
    """The console script installed beside this interpreter, else the module (the same app).

    Never the first ``barrierflow`` on PATH: that may belong to another environment, with other code.
    """
    script = Path(sys.executable).parent / "barrierflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "barrierflow.cli.main"]


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60):
    """Run the real command in a subprocess, from the repository root."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("BARRIERFLOW_DEBUG", None)
    return subprocess.run(
        [*barrierflow_argv(), *args],
        cwd=ROOT,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
