"""``barrierflow serve`` on the command line: its defaults, and a clear exit when Redis does not answer."""

from __future__ import annotations

from typer.testing import CliRunner

from barrierflow.cli.main import app


def test_serve_listens_on_this_machine_only_by_default() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[default: 127.0.0.1]" in result.output and "[default: 8000]" in result.output
    assert "--cors-origin" in result.output and "--import" in result.output and "--prefix" in result.output


def test_serve_exits_3_when_redis_does_not_answer() -> None:
    result = CliRunner().invoke(app, ["serve", "--redis", "redis://127.0.0.1:1/0", "--port", "0"])
    assert result.exit_code == 3, result.output
    assert "cannot reach Redis" in result.stderr
