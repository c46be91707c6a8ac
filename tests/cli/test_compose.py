"""docker-compose.yml and the Dockerfile, checked without a Docker engine: valid YAML, the services the README
promises, healthchecks, Redis durability flags, and commands that the CLI really accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

import pytest
import typer.main
import yaml

from barrierflow.cli.main import app
from tests.cli.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def argv_of(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def check_cli_accepts(argv: list[str]) -> Any:
    """Parse ``argv`` with the real CLI (without running it): unknown commands or options raise ``UsageError``."""
    assert argv[0] == "barrierflow", argv
    group = typer.main.get_command(app)  # typer's (vendored) click group: duck-typed here
    with group.context_class(group, info_name="barrierflow") as ctx:
        command = group.get_command(ctx, argv[1])
        if command is None:
            raise LookupError(f"no barrierflow command {argv[1]!r}")
        command.make_context(argv[1], argv[2:], parent=ctx).close()
    return command


def is_usage_error(exc: BaseException) -> bool:
    return any(k.__name__ == "UsageError" for k in type(exc).__mro__)


def test_services_and_the_shared_image(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "worker", "coordinator", "api", "demo", "cli"}
    ours = [services[name] for name in ("worker", "coordinator", "api", "demo", "cli")]
    assert {s["build"] for s in ours} == {"."} and len({s["image"] for s in ours}) == 1
    for scalable in (services["worker"], services["coordinator"]):  # or --scale ...=N would clash
        assert "container_name" not in scalable and "ports" not in scalable
    assert services["cli"]["profiles"] == ["cli"]  # `docker compose run --rm cli ...`, not started by `up`


def test_redis_keeps_checkpoints_and_never_evicts(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(argv_of(redis["command"]))
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_every_service_has_a_healthcheck(compose: dict) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"service {name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    worker_check = compose["services"]["worker"]["healthcheck"]["test"]
    assert worker_check[0] == "CMD-SHELL"  # the shell expands $HOSTNAME (written $$HOSTNAME for compose)
    # The registry, not a broadcast: `celery inspect ping` leaves a reply key in Redis at every check.
    assert "inspect" not in worker_check[1] and "ping" not in worker_check[1]
    argv = shlex.split(worker_check[1].replace("$$HOSTNAME", "replica-1"))
    assert check_cli_accepts(argv).name == "workers"
    assert argv[argv.index("--node") + 1] == "celery@replica-1"  # Celery's node name in that container
    worker_argv = argv_of(compose["services"]["worker"]["command"])
    assert "--hostname" not in worker_argv and "-n" not in worker_argv  # so the node name is that default


def test_the_workers_and_coordinator_wait_for_a_healthy_redis(compose: dict) -> None:
    for name in ("worker", "coordinator", "api", "demo"):
        assert compose["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_service_commands_exist_in_the_cli(compose: dict) -> None:
    worker_argv = argv_of(compose["services"]["worker"]["command"])
    assert check_cli_accepts(worker_argv).name == "worker"
    imports = [worker_argv[i + 1] for i, arg in enumerate(worker_argv) if arg in ("--import", "-I")]
    assert "examples.document_pipeline" in imports
    for module in imports:
        __import__(module)

    coordinator_argv = argv_of(compose["services"]["coordinator"]["command"])
    assert check_cli_accepts(coordinator_argv).name == "coordinator"
    assert "--celery" in coordinator_argv and "--health-file" in coordinator_argv
    coordinator_imports = [
        coordinator_argv[i + 1] for i, arg in enumerate(coordinator_argv) if arg == "--import"
    ]
    assert coordinator_imports == imports, "coordinators and workers must know the same workflows"
    grace = float(coordinator_argv[coordinator_argv.index("--shutdown-grace") + 1])
    assert int(compose["services"]["coordinator"]["stop_grace_period"].rstrip("s")) > grace

    demo_argv = argv_of(compose["services"]["demo"]["command"])
    assert check_cli_accepts(demo_argv).name == "submit"
    assert "--wait" in demo_argv and demo_argv[2] == "document_pipeline"
    cli_argv = argv_of(compose["services"]["cli"]["command"])
    assert check_cli_accepts(cli_argv).name == "runs"


def test_the_api_service_serves_the_same_workflows_on_the_host_loopback(compose: dict) -> None:
    api = compose["services"]["api"]
    argv = argv_of(api["command"])
    assert check_cli_accepts(argv).name == "serve"
    worker_argv = argv_of(compose["services"]["worker"]["command"])
    imports = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--import"]
    assert imports == [worker_argv[i + 1] for i, arg in enumerate(worker_argv) if arg == "--import"]
    # inside its container it must listen beyond loopback to be reachable; the host publishes it on 127.0.0.1 only
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "8000"
    assert api["ports"] == ["127.0.0.1:${BARRIERFLOW_API_PORT:-8000}:8000"]
    assert api["environment"]["BARRIERFLOW_API_TOKEN"] == "${BARRIERFLOW_API_TOKEN:-}"
    assert "BARRIERFLOW_REDIS_URL" in api["environment"] and "BARRIERFLOW_PREFIX" in api["environment"]
    check = api["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"] and "curl" not in " ".join(check)  # no curl in the image
    assert "http://127.0.0.1:8000/api/health" in check[3] and "BARRIERFLOW_API_TOKEN" in check[3]
    compile(check[3], "healthcheck", "exec")


def test_the_demo_runs_the_instance_the_readme_inspects(compose: dict) -> None:
    """The README's ``barrierflow status compose-demo`` finds what the compose demo submitted."""
    argv = argv_of(compose["services"]["demo"]["command"])
    instance = argv[argv.index("--instance") + 1]
    readme = (ROOT / "README.md").read_text()
    assert f"barrierflow status {instance} -I examples.document_pipeline" in readme
    assert "${BARRIERFLOW_REDIS_PORT:-6379}" in compose["services"]["redis"]["ports"][0]
    assert "BARRIERFLOW_REDIS_PORT=6380 docker compose up" in readme


def test_the_demo_input_runs_embedded(compose: dict) -> None:
    """The demo's workflow and input are valid: the same run, embedded, gives a report."""
    from typer.testing import CliRunner

    from tests.cli.conftest import json_lines

    argv = argv_of(compose["services"]["demo"]["command"])
    embedded = [
        "run",
        "examples.document_pipeline:document_pipeline",
        "--input",
        argv[argv.index("--input") + 1],
    ]
    result = CliRunner().invoke(app, [*embedded, "--json"])
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[-1]["outputs"][0]["title"] == "compose demo"


def test_cli_parse_check_rejects_what_does_not_exist() -> None:
    with pytest.raises(LookupError):
        check_cli_accepts(["barrierflow", "frobnicate"])
    with pytest.raises(Exception) as bad_option:
        check_cli_accepts(["barrierflow", "run", "x:y", "--bogus"])
    assert is_usage_error(bad_option.value)
    with pytest.raises(Exception) as missing_argument:
        check_cli_accepts(["barrierflow", "graph"])
    assert is_usage_error(missing_argument.value)


def test_dockerfile_installs_dependencies_before_the_code() -> None:
    """Editing the code must not reinstall every dependency: the dependency layer sees only pyproject.toml."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert lines[1].startswith("FROM python:3.11-slim")
    first_code_copy = min(i for i, line in enumerate(lines) if line.startswith("COPY barrierflow"))
    dependency_install = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    package_install = next(i for i, line in enumerate(lines) if "pip install --no-deps ." in line)
    assert dependency_install < first_code_copy < package_install
    copied_before_deps = [line for line in lines[:dependency_install] if line.startswith("COPY")]
    assert copied_before_deps == ["COPY pyproject.toml ./"]
    for package in (
        "barrierflow",
        "engine",
        "broker",
        "workers",
    ):  # what `pip install .` maps into barrierflow
        assert f"COPY {package} ./{package}" in lines[first_code_copy:package_install]
    assert "COPY examples ./examples" in lines[package_install:]  # run from /app, not installed
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_when_available() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
