"""The CLI and the worker registry: the ``run --celery`` pre-flight, ``barrierflow workers`` (the health check),
and the flags ``barrierflow worker`` gives Celery. Registrations are written here as a worker's heartbeat writes
them; ``tests/workers/test_no_reply_keys.py`` does the same with a real worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from barrierflow.broker.worker_registry import WorkerRegistration
from barrierflow.cli import main as cli_main
from barrierflow.cli.live_workers import preflight
from barrierflow.cli.main import app
from barrierflow.workers.wire import LAYOUT
from tests.cli.conftest import ROOT, barrierflow_argv, json_lines
from tests.cli_worker import delete_queue, new_queue
from tests.test_worker_registry import entry


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def register(client: redis.Redis, real_redis_prefix: str):
    """``register(node, *queues, layout=...)`` writes a live entry; all are removed after the test."""
    made: list[tuple[WorkerRegistration, tuple[str, ...]]] = []

    def register(node: str, *queues: str, layout: str = LAYOUT, slots: int = 2) -> None:
        registration = WorkerRegistration(client, real_redis_prefix, node)
        registration.beat(entry(node, *queues, layout=layout, slots=slots, interval=30))
        made.append((registration, queues))

    yield register
    for registration, queues in made:
        registration.leave(queues)


async def test_the_preflight_says_what_the_registry_says(
    redis_url: str, real_redis_prefix: str, register
) -> None:
    from barrierflow.broker import RedisStore

    prefix = real_redis_prefix
    store = RedisStore.from_url(redis_url, prefix=prefix)

    async def check(queue: str) -> str | None:
        return await preflight(store.client, prefix, queue, redis_url, "barrierflow worker --import m")

    try:
        nobody = await check("q-main")
        assert nobody == (
            f"no live worker is registered on queue 'q-main' under prefix '{prefix}' in Redis {redis_url}; "
            "deliveries wait in the queue until one starts (barrierflow worker --import m --queue q-main, "
            "with the same --redis and --prefix)"
        )
        register("w1@h", "q-other")
        elsewhere = await check("q-main")
        assert "no live worker is registered on queue 'q-main'" in elsewhere
        assert "workers there consume 'q-other' (1)" in elsewhere

        register("old@h", "q-main", layout="0:older")
        versions = await check("q-main")
        assert versions.startswith("every live worker on queue 'q-main' run another barrierflow version")
        assert f"wire layout {LAYOUT}" in versions and "old@h (layout 0:older" in versions

        register("w2@h", "q-main")
        assert (await check("q-main")).startswith("some live workers on queue 'q-main'")
        assert await check("q-other") is None  # live workers of this version: nothing to say
    finally:
        await store.aclose()


def test_workers_lists_the_live_workers_and_checks_nodes_and_queues(
    redis_url: str, real_redis_prefix: str, register
) -> None:
    runner = CliRunner()
    opts = ["--redis", redis_url, "--prefix", real_redis_prefix]

    empty = runner.invoke(app, ["workers", *opts])
    assert empty.exit_code == 1  # no live worker at all: unhealthy
    assert f"no live worker is registered under prefix '{real_redis_prefix}'" in empty.stderr

    register("w1@h", "q1", slots=3)
    register("w2@h", "q1", "q2", layout="0:older")
    listed = runner.invoke(app, ["workers", *opts, "--json"])
    assert listed.exit_code == 0, listed.output
    records = json_lines(listed.stdout)
    assert [(r["node"], r["slots"], r["queues"], r["same_version"]) for r in records] == [
        ("w1@h", 3, ["q1"], True),
        ("w2@h", 2, ["q1", "q2"], False),
    ]

    healthy = runner.invoke(app, ["workers", *opts, "--node", "w1@h", "--node", "w2@h", "--queue", "q1"])
    assert healthy.exit_code == 0, healthy.output
    missing = runner.invoke(app, ["workers", *opts, "--node", "w1@h", "--queue", "q2"])
    assert missing.exit_code == 1
    assert f"worker w1@h is not registered on queue 'q2' under prefix '{real_redis_prefix}'" in missing.stderr
    assert runner.invoke(app, ["workers", *opts, "--queue", "q3"]).exit_code == 1
    assert runner.invoke(app, ["workers", *opts, "--node", "gone@h"]).exit_code == 1

    unreachable = runner.invoke(app, ["workers", "--redis", "redis://127.0.0.1:1/0", "--node", "w1@h"])
    assert unreachable.exit_code == 3


def test_worker_starts_celery_without_mingle_and_gossip_and_with_remote_control(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mingle broadcasts to every worker at start-up and collects replies; gossip is not needed either."""
    started: list[tuple[object, list[str]]] = []
    monkeypatch.setattr(cli_main, "start_worker", lambda celery_app, argv: started.append((celery_app, argv)))
    result = CliRunner().invoke(
        app, ["worker", "--redis", redis_url, "-I", "examples.text_pipeline", "--", "-E"]
    )
    assert result.exit_code == 0, result.output
    [(celery_app, argv)] = started
    assert "--without-mingle" in argv and "--without-gossip" in argv
    assert argv[-1] == "-E"  # the user's own flags still reach Celery (events for Flower)
    assert celery_app.conf.worker_enable_remote_control is True  # revoke and `celery control` still work
    from barrierflow.workers.presence import WorkerPresence

    assert WorkerPresence in celery_app.steps["consumer"]


@pytest.mark.timeout(120)
def test_a_celery_run_without_a_worker_says_so_before_it_waits(
    redis_url: str, real_redis_prefix: str
) -> None:
    """The pre-flight reads the registry: no broadcast, no wait, and it names the queue, prefix and Redis."""
    queue = new_queue("noworker")
    proc = subprocess.Popen(
        [
            *barrierflow_argv(),
            "run",
            "examples.text_pipeline:text_pipeline",
            "--input",
            '"hi"',
            "--redis",
            redis_url,
            "--prefix",
            real_redis_prefix,
            "--instance",
            f"nw-{uuid.uuid4().hex[:6]}",
            "--celery",
            "--json",
        ],
        cwd=ROOT,
        env={**os.environ, "BARRIERFLOW_QUEUE": queue},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "warning" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the run ended without a warning"
        assert line.startswith(f"warning: no live worker is registered on queue '{queue}' under prefix")
        assert f"'{real_redis_prefix}' in Redis {redis_url}" in line
        while '"superstep_started"' not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()  # the task is queued: nothing more happens until a worker starts
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the run stops at its last checkpoint, its lease released
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
        delete_queue(redis_url, queue)
