"""Every Python block of the README runs as written, each the way the README says to run it.

A block starts with a comment naming its file (``# hello_flow.py``). The blocks are written to a folder beside
each other (the test file imports ``hello_flow``), and run: a ``test_*.py`` with pytest, any other as a script.
The distributed coordinator runs against the test Redis, under a private prefix and queue, with a real
``barrierflow worker`` started here. A new block without a check below fails ``test_every_block_is_checked``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import ROOT, barrierflow_argv
from tests.cli_worker import start_cli_worker
from tests.conftest import delete_prefix

BLOCK = re.compile(r"^```python\n# (?P<name>[\w.]+\.py)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
#: Shell sessions that run as written too: a ```bash block whose first line names its file (``# x.sh``).
SHELL_BLOCK = re.compile(r"^```bash\n# (?P<name>[\w.]+\.sh)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    blocks = {m["name"]: f"# {m['name']}\n{m['code']}" for m in BLOCK.finditer(text)}
    assert text.count("```python") == len(blocks), "every ```python block starts with '# <file>.py'"
    blocks.update({m["name"]: f"# {m['name']}\n{m['code']}" for m in SHELL_BLOCK.finditer(text)})
    return blocks


CHECKED = {
    "hello_flow.py",
    "coordinator.py",
    "test_hello_flow.py",
    "resilient_flow.py",
    "submit_jobs.py",
    "http_session.sh",
}


def test_every_block_is_checked() -> None:
    assert set(readme_blocks()) == CHECKED


@pytest.fixture
def blocks_dir(tmp_path: Path) -> Path:
    for name, code in readme_blocks().items():
        (tmp_path / name).write_text(code)
    return tmp_path


def run_python(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("script", ["hello_flow.py", "resilient_flow.py"])
def test_a_script_prints_what_its_comment_says(blocks_dir: Path, script: str) -> None:
    code = (blocks_dir / script).read_text()
    [promised] = re.findall(r"print\(.*\)  # (.*)$", code, re.MULTILINE)
    assert run_python([script], blocks_dir).stdout.strip() == promised


def test_the_testing_section_file_passes_with_the_plugin(blocks_dir: Path) -> None:
    result = run_python(["-m", "pytest", "-p", "no:cacheprovider", "-q", "test_hello_flow.py"], blocks_dir)
    assert "2 passed" in result.stdout


@pytest.mark.timeout(300)
def test_the_coordinator_runs_on_a_real_worker(
    blocks_dir: Path, redis_url: str, real_redis_prefix: str
) -> None:
    """With the worker command of "Going distributed", on a queue and a prefix of this test's own."""
    worker = start_cli_worker(
        barrierflow_argv(),
        redis_url=redis_url,
        imports=["examples.document_pipeline"],
        cwd=ROOT,
        log=blocks_dir / "worker.log",
        prefix=real_redis_prefix,
    )
    env = {
        "BARRIERFLOW_REDIS_URL": redis_url,
        "BARRIERFLOW_PREFIX": real_redis_prefix,
        "BARRIERFLOW_QUEUE": worker.queue,
        "PYTHONPATH": str(ROOT),  # the README runs it from the checkout, where examples/ lives
    }
    try:
        worker.wait_ready()
        printed = run_python(["coordinator.py"], blocks_dir, env).stdout.split()
        again = run_python(["coordinator.py"], blocks_dir, env).stdout.split()
    finally:
        worker.stop()
    assert printed[1:] == again[1:] == ["idle", "2"]
    assert printed[0] != again[0]  # a new instance each time: no WorkflowNotIdleError on a second run
    delete_prefix(redis_url, real_redis_prefix)


def test_the_first_command_installs_the_runtime_only() -> None:
    """Command 1 needs no test dependencies (``tests/test_wheel.py`` runs it in such an install)."""
    readme = (ROOT / "README.md").read_text()
    assert (
        "pip install . && barrierflow run examples.text_pipeline:text_pipeline --input '\"hello\"'" in readme
    )
    first = readme[readme.index("# 1. ") : readme.index("# 2. ")]
    assert "[test]" not in first


@pytest.mark.timeout(300)
def test_submit_jobs_gets_its_result_from_a_coordinator(
    blocks_dir: Path, redis_url: str, real_redis_prefix: str
) -> None:
    """With the coordinator command of "Going distributed" (handlers in the coordinator: no --celery)."""
    env = {
        "BARRIERFLOW_REDIS_URL": redis_url,
        "BARRIERFLOW_PREFIX": real_redis_prefix,
        "PYTHONPATH": str(ROOT),
    }
    coordinator = subprocess.Popen(
        [*barrierflow_argv(), "coordinator", "--import", "examples.document_pipeline", "--lock-ttl", "5"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        printed = run_python(["submit_jobs.py"], blocks_dir, env).stdout.strip()
    finally:
        coordinator.terminate()  # SIGTERM: a graceful stop
        assert coordinator.wait(60) == 0
    code = (blocks_dir / "submit_jobs.py").read_text()
    [promised] = re.findall(r"print\(.*\)  # (.*)$", code, re.MULTILINE)
    assert printed == promised == "idle 2"
    delete_prefix(redis_url, real_redis_prefix)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_curl_session_runs_against_serve_and_a_coordinator(
    blocks_dir: Path, redis_url: str, real_redis_prefix: str
) -> None:
    """The README's curl session, as written, against the two commands it shows (on a port and prefix of this
    test's own)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "BARRIERFLOW_REDIS_URL": redis_url,
        "BARRIERFLOW_PREFIX": real_redis_prefix,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("BARRIERFLOW_API_TOKEN", None)
    commands = [
        [*barrierflow_argv(), "coordinator", "--import", "examples.approval_flow"],
        [*barrierflow_argv(), "serve", "--import", "examples.approval_flow", "--port", str(port)],
    ]
    procs = [
        subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for argv in commands
    ]
    try:
        api = f"http://127.0.0.1:{port}"
        _wait_for(f"{api}/api/health")
        result = subprocess.run(
            ["bash", "-eu", "http_session.sh"],  # no pipefail: the last curl ends by its --max-time
            cwd=blocks_dir,
            env={**env, "API": api},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    events = [line for line in lines if line.startswith("event: ")]
    assert events[0] == "event: started" and events[-1] == "event: run_ended", lines
    assert "event: request_info" in events
    assert "idle_with_pending_requests" in lines
    [outputs] = [line for line in lines if line.startswith("[{")]
    assert "'published': True" in outputs and "'topic': 'release notes'" in outputs
    assert int(lines[-1]) >= 10  # the instance's events: both runs'
    delete_prefix(redis_url, real_redis_prefix)


def _wait_for(url: str, timeout: float = 30) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
