"""A ``barrierflow worker`` process as a user starts one, for the tests that drive the whole distributed path.

Each worker consumes a queue of its own (named after the test session, ``tests/redis_hygiene.py``), so other
workers on the same Redis never take its tasks. It runs in its own process group: stopping it stops its pool.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.redis_hygiene import SESSION, forget_celery_nodes


def new_queue(kind: str) -> str:
    return f"bftest-{SESSION}-{kind}-{uuid.uuid4().hex[:8]}"


@dataclass
class CliWorker:
    proc: subprocess.Popen
    node: str  # name@host, as Celery names it
    queue: str
    redis_url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker answers Celery's ping on its broker (asked from a private app of this process)."""
        from celery import Celery

        probe = Celery("bftest-probe", broker=self.redis_url, set_as_current=False)
        probe.conf.accept_content = ["msgpack", "json"]  # the workers' replies are msgpack
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"barrierflow worker exited early:\n{self.log_text()}")
                if probe.control.ping(destination=[self.node], timeout=1.0):
                    return
            raise RuntimeError(f"barrierflow worker did not answer in {timeout} s:\n{self.log_text()}")
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM (Celery's warm shutdown) by PID, SIGKILL if it lingers; then remove its Redis traces."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        forget_celery_nodes(self.redis_url, [self.node])
        delete_queue(self.redis_url, self.queue)


def start_cli_worker(
    barrierflow: list[str],
    *,
    redis_url: str,
    imports: list[str],
    cwd: Path,
    log: Path,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> CliWorker:
    """``barrierflow worker --redis URL --queue Q --import M...`` (``barrierflow`` is the command's argv)."""
    queue = new_queue("cli")
    name = f"{queue}-w"
    argv = [
        *barrierflow,
        "worker",
        "--redis",
        redis_url,
        "--queue",
        queue,
        "--concurrency",
        "2",
        "--loglevel",
        "warning",
        "--hostname",
        f"{name}@%h",
        *(arg for module in imports for arg in ("--import", module)),
        *(extra or []),
        "--",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return CliWorker(proc, f"{name}@{socket.gethostname()}", queue, redis_url, log)


def delete_queue(redis_url: str, queue: str) -> None:
    """The queue's list and its kombu binding table (named after the queue, which is ours alone)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [
        *client.scan_iter(match=f"{queue}*", count=1000),
        *client.scan_iter(match=f"_kombu.binding*{queue}*"),
    ]
    if keys:
        client.delete(*keys)
    client.close()
