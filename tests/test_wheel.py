"""The built wheel, installed with no extras into a fresh virtualenv, does what the README promises.

This is what a user (and the Docker image) gets from ``pip install .``: none of the test dependencies that would
hide a missing runtime one (kombu's Redis transport needs ``packaging``, which pytest happens to bring along).
In that environment: only ``barrierflow`` is installed at the top level; the embedded example runs through the
``barrierflow`` script; a ``barrierflow worker`` starts and a ``--celery`` run completes on it; and pytest, with
barrierflow's plugin loaded, runs without fakeredis (the fixtures say what to install).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_worker import start_cli_worker
from tests.conftest import delete_prefix

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "barrierflow", "engine", "broker", "workers"]

PLUGIN_CHECK = """
def test_runs_without_fakeredis():
    assert True

def test_a_fixture_says_what_to_install(barrierflow_store):
    pass
"""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the wheel installed, no extras: its ``bin`` folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy, so building never writes into the checkout
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(work / "dist"),
            str(source),
        ]
    )
    [wheel] = (work / "dist").glob("barrierflow-*.whl")
    _run([sys.executable, "-m", "venv", str(work / "venv")])
    bin_dir = work / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)])
    return bin_dir


def _site_packages(bin_dir: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(_run([str(bin_dir / "python"), "-c", code]).stdout.strip())


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """Where a user runs the examples from: a folder holding ``examples/``, as in the Docker image."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_installs_one_package_and_runs_embedded_and_distributed(
    installed: Path, app_dir: Path, redis_url: str, real_redis_prefix: str
) -> None:
    [dist_info] = _site_packages(installed).glob("barrierflow-*.dist-info")
    top_level = {
        line.split(",")[0].split("/")[0]
        for line in (dist_info / "RECORD").read_text().splitlines()
        if not line.startswith(("../", dist_info.name))
    }
    assert top_level == {"barrierflow"}
    shipped = (dist_info / "RECORD").read_text()
    for asset in ("index.html", "js/main.js", "vendor/mermaid/mermaid.min.js", "vendor/mermaid/LICENSE"):
        assert f"barrierflow/server/static/{asset}," in shipped, f"the page's {asset} is not in the wheel"
    no_generic = "import importlib.util as u; print([n for n in ('engine', 'broker', 'workers', 'examples', 'barrierflow_cli') if u.find_spec(n)])"
    assert (
        _run([str(installed / "python"), "-c", no_generic], cwd=dist_info.parent.parent).stdout.strip()
        == "[]"
    )

    serves = "import barrierflow.server as s; print(type(s.create_app()).__name__)"  # a plain install serves
    assert _run([str(installed / "python"), "-c", serves], cwd=app_dir).stdout.strip() == "FastAPI"

    barrierflow = [str(installed / "barrierflow")]
    text = ["run", "examples.text_pipeline:text_pipeline", "--input", '"hello"', "--json"]
    embedded = _run([*barrierflow, *text], cwd=app_dir, env={**os.environ, "PYTHONPATH": ""})
    assert json.loads(embedded.stdout.splitlines()[-1])["outputs"] == ["OLLEH"]

    worker = start_cli_worker(
        barrierflow,
        redis_url=redis_url,
        imports=["examples.text_pipeline"],
        cwd=app_dir,
        log=app_dir / "worker.log",
        prefix=real_redis_prefix,
        env={"PYTHONPATH": ""},
    )
    try:
        worker.wait_ready()
        distributed = _run(
            [*barrierflow, *text, "--redis", redis_url, "--prefix", real_redis_prefix, "--celery"],
            cwd=app_dir,
            env={**os.environ, "PYTHONPATH": "", "BARRIERFLOW_QUEUE": worker.queue},
        )
    finally:
        worker.stop()
    assert "warning" not in distributed.stderr  # the pre-flight found the worker in the registry
    records = [json.loads(line) for line in distributed.stdout.splitlines()]
    assert records[-1]["outputs"] == ["OLLEH"]
    assert {r["executor_id"] for r in records if r["type"] == "executor_invoked"} == {"upper", "reverse"}
    delete_prefix(redis_url, real_redis_prefix)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_python_started_in_the_checkout_imports_the_checkouts_package(installed: Path) -> None:
    """The README runs the examples and its scripts from the checkout with a plain ``pip install .``: there the
    checkout's ``barrierflow/`` folder shadows the installed package, and its layers live at the root."""
    env = {**os.environ, "PYTHONPATH": ""}
    script = _run([str(installed / "python"), "-m", "examples.text_pipeline"], cwd=ROOT, env=env)
    assert script.stdout.splitlines()[-1] == "OLLEH"
    where = "import barrierflow.broker, barrierflow.workers as w; print(w.__file__, w.app.main)"
    assert _run([str(installed / "python"), "-c", where], cwd=ROOT, env=env).stdout.split() == [
        str(ROOT / "workers" / "__init__.py"),
        "barrierflow",
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pytest_runs_with_the_plugin_but_without_fakeredis(installed: Path, tmp_path: Path) -> None:
    _run([str(installed / "python"), "-m", "pip", "install", "--quiet", "pytest"])
    (tmp_path / "test_plugin.py").write_text(PLUGIN_CHECK)
    result = subprocess.run(
        [str(installed / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_plugin.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # one test failed, pytest itself did not
    assert "1 passed" in result.stdout and "1 error" in result.stdout, result.stdout
    assert "pip install 'barrierflow[testing]'" in result.stdout
