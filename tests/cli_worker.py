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
    prefix: str  # where it registers (barrierflow worker --prefix)
    redis_url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker is in the worker registry on its queue (nothing broadcast, nothing left behind)."""
        import redis

        from barrierflow.broker.worker_registry import live_workers

        client = redis.Redis.from_url(self.redis_url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"barrierflow worker exited early:\n{self.log_text()}")
                if self.node in {w.node for w in live_workers(client, self.prefix, self.queue)}:
                    return
                time.sleep(0.05)
            raise RuntimeError(f"barrierflow worker did not register in {timeout} s:\n{self.log_text()}")
        finally:
            client.close()

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
        forget_registration(self.redis_url, self.prefix, self.node, self.queue)
        delete_queue(self.redis_url, self.queue)


def start_cli_worker(
    barrierflow: list[str],
    *,
    redis_url: str,
    imports: list[str],
    cwd: Path,
    log: Path,
    prefix: str = "barrierflow",
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> CliWorker:
    """``barrierflow worker --redis URL --prefix P --queue Q --import M...`` (``barrierflow``: the command's
    argv). Coordinators that should find it in the worker registry use the same prefix."""
    queue = new_queue("cli")
    name = f"{queue}-w"
    argv = [
        *barrierflow,
        "worker",
        "--redis",
        redis_url,
        "--prefix",
        prefix,
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
    return CliWorker(proc, f"{name}@{socket.gethostname()}", queue, prefix, redis_url, log)


def forget_registration(redis_url: str, prefix: str, node: str, queue: str) -> None:
    """A worker that had to be killed cannot leave the worker registry (its entry would lapse by itself)."""
    import redis

    from barrierflow.broker.worker_registry import forget_worker

    client = redis.Redis.from_url(redis_url)
    forget_worker(client, prefix, node, [queue])
    client.close()


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
