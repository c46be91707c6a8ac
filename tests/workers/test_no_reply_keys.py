"""Regression: barrierflow leaves no Celery reply key (``<uuid>.reply.celery.pidbox``) and no key without a TTL.

Every remote-control broadcast with replies (``ping``, ``inspect``, mingle's ``hello`` at a worker's start)
makes a reply list, and a reply that comes late re-creates it without a TTL, for ever (celery/celery#6089).
barrierflow uses the worker registry instead. This test runs the whole path on a private ``redis-server`` with
keyspace notifications on, so it sees every key anything touched, whoever else uses the shared Redis: a
``barrierflow worker`` starts and registers, ``barrierflow workers`` checks it, a ``run --celery`` and an
in-process ``CeleryDispatcher`` superstep (slots from the registry) run on it, the worker stops. No reply key
may have been touched at any moment, none may exist after, and every key left without a TTL must be one of
kombu's own keys of the task queue (its list and routing tables).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from barrierflow.broker import RedisStore
from barrierflow.workers import CeleryDispatcher, app, configure, settings_of
from examples.text_pipeline import text_pipeline
from tests.cli.conftest import ROOT, barrierflow_argv, json_lines, run_cli
from tests.cli_worker import start_cli_worker
from tests.conftest import IN_CI, start_redis_server

PREFIX = "bfnoreply"


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test alone, with keyspace notifications (never set on a shared server)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; CI needs it")
        pytest.skip("redis-server is not installed")
    proc, url = start_redis_server(binary, "--notify-keyspace-events", "KA")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(5)


class KeyWatch:
    """Every (key, event) the server notifies, from a thread, until ``stop``."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("__keyspace@0__:*")
        self.events: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                key = message["channel"].decode().partition(":")[2]
                self.events.append((key, message["data"].decode()))

    def stop(self) -> None:
        time.sleep(0.5)  # the last notifications are on their way
        self._stop.set()
        self._thread.join()
        self.pubsub.close()
        self.client.close()


@pytest.mark.timeout(240)
async def test_a_worker_a_celery_run_and_a_superstep_leave_no_reply_key_and_no_key_without_ttl(
    private_redis: str, tmp_path
) -> None:
    url = private_redis
    watch = KeyWatch(url)
    saved = settings_of(app)
    worker = start_cli_worker(
        barrierflow_argv(),
        redis_url=url,
        imports=["examples.text_pipeline"],
        cwd=ROOT,
        log=tmp_path / "worker.log",
        prefix=PREFIX,
    )
    try:
        worker.wait_ready()
        opts = ["--redis", url, "--prefix", PREFIX]
        assert run_cli("workers", *opts, "--node", worker.node).returncode == 0

        env = {"BARRIERFLOW_QUEUE": worker.queue}
        ran = run_cli(
            "run", "examples.text_pipeline:text_pipeline", "--input", '"hello"', *opts, "--celery", env=env
        )
        assert ran.returncode == 0, ran.stderr
        assert json_lines(ran.stdout)[-1]["outputs"] == ["OLLEH"]
        assert "warning" not in ran.stderr  # the pre-flight found the worker

        configure(app, redis_url=url, broker_url=url, queue=worker.queue, prefix=PREFIX, worker_slots=None)
        async with (
            RedisStore.from_url(url, prefix=PREFIX, checkpoint_ttl=600) as store,
            CeleryDispatcher(app, store=store) as dispatcher,
        ):
            wf = text_pipeline().build(
                instance_id=f"noreply-{uuid.uuid4().hex[:6]}", store=store, dispatcher=dispatcher
            )
            assert (await wf.run("hello")).outputs == ["OLLEH"]
            assert await dispatcher.worker_slots() == 2  # planned with the registry's slots
    finally:
        configure(app, saved)
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGTERM)  # a warm shutdown: it leaves the registry
        worker.proc.wait(30)
    assert run_cli("workers", "--redis", url, "--prefix", PREFIX, "--node", worker.node).returncode == 1
    watch.stop()

    client = redis.Redis.from_url(url)
    touched = sorted({key for key, _ in watch.events if "reply.celery.pidbox" in key})
    assert touched == [], f"a broadcast with replies ran: {touched} (see {worker.log}: mingle?)"
    assert list(client.scan_iter(match="*reply.celery.pidbox*")) == []
    assert {key for key, _ in watch.events if key.startswith(f"{PREFIX}:workers:")}, "the worker registered"
    keys = list(client.scan_iter(count=1000))
    without_ttl = {key.decode() for key in keys if client.pttl(key) == -1}
    # kombu's own keys of the task queue, which live as long as the deployment's queue does: its routing
    # tables, and, should a message be taken back at the worker's shutdown (acknowledged late), the queue's
    # list and the un-acknowledged index. Everything else (barrierflow's keys) must carry a TTL.
    kombu_tables = {
        f"_kombu.binding.{worker.queue}",
        f"_kombu.binding_permanent.{worker.queue}",
        "_kombu.binding_deadlines",
        worker.queue,
        "unacked",
        "unacked_index",
    }
    unexpected = sorted(without_ttl - kombu_tables)
    assert not unexpected, "keys without a TTL: " + "; ".join(
        f"{key} ({client.type(key).decode()}: {[e for k, e in watch.events if k == key]})"
        for key in unexpected
    )
    client.close()
