"""``barrierflow serve`` on the command line: its defaults, and a clear exit when Redis does not answer or the
port is taken."""

from __future__ import annotations

import socket

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


def test_serve_exits_2_with_one_line_when_its_port_is_taken(redis_url: str, real_redis_prefix: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--redis", redis_url, "--prefix", real_redis_prefix, "--port", str(port)]
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output  # bad input, not 3 ("Redis unreachable")
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "--port" in result.stderr
