"""Real Celery worker processes for the worker tests, on the session's real Redis (``redis_url``).

Each session gets its own queue, so other workers on the same Redis (a developer's, another test run's) never
take these tasks. Workers run exactly as in production (``python -m celery -A barrierflow.workers.app worker``), configured
only through the environment; they import the test workflows and the examples via ``BARRIERFLOW_IMPORTS``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from barrierflow.broker.worker_registry import WorkerEntry, forget_worker, live_workers
from barrierflow.workers.process import worker_command
from tests.conftest import delete_prefix
from tests.redis_hygiene import SESSION, forget_celery_nodes
from tests.workflows_for_workers import SIDE_PREFIX

ROOT = Path(__file__).resolve().parents[2]
#: The test workers' prefix (their results go under each envelope's prefix; this one names their registry).
WORKERS_PREFIX = "barrierflow"
IMPORTS = ",".join(
    [
        "tests.workflows_for_workers",
        "examples.text_pipeline",
        "examples.document_pipeline",
        "examples.approval_flow",
        "examples.iterative_loop",
        "examples.resilient_pipeline",
    ]
)


#: Seconds between the test workers' registry beats: an entry lapses 3 s after a worker is killed.
HEARTBEAT = 1.0


def worker_env(redis_url: str, queue: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BARRIERFLOW_REDIS_URL=redis_url,
        BARRIERFLOW_BROKER_URL=redis_url,
        BARRIERFLOW_QUEUE=queue,
        BARRIERFLOW_PREFIX=WORKERS_PREFIX,
        BARRIERFLOW_WORKER_HEARTBEAT=str(HEARTBEAT),
        BARRIERFLOW_IMPORTS=IMPORTS,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    env.pop("BARRIERFLOW_RESULT_BACKEND", None)
    return env


@dataclass
class WorkerPool:
    """Worker processes of this session; ``start`` adds one (e.g. a worker a test will kill).

    They register in the worker registry under ``WORKERS_PREFIX``, where ``wait_ready`` finds them.
    """

    redis_url: str
    queue: str
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    queues: dict[str, str] = field(default_factory=dict)  # name -> the queue it was started on

    @staticmethod
    def node(name: str) -> str:
        return f"{name}@{socket.gethostname()}"

    def start(self, name: str, queue: str | None = None) -> str:
        """Start a worker consuming ``queue`` (default the session's); returns its node name once it answers."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            worker_command(queue or self.queue, name),
            cwd=ROOT,
            env=worker_env(self.redis_url, queue or self.queue),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killing it kills its pool child too
        )
        log.close()
        self.procs[name] = proc
        self.queues[name] = queue or self.queue
        return self.node(name)

    def live(self, queue: str | None = None) -> list[WorkerEntry]:
        """The live workers of ``queue`` (default the session's) in the worker registry."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            return live_workers(client, WORKERS_PREFIX, queue or self.queue)
        finally:
            client.close()

    def wait_ready(self, names: list[str], timeout: float = 30.0) -> None:
        """Until each worker is in the registry on its queue (no broadcast: its replies would leave keys)."""
        waiting = set(names)
        deadline = time.monotonic() + timeout
        while waiting:
            for name in names:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"worker {name} exited: {self.log_of(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(waiting)} did not register within {timeout} s")
            for name in list(waiting):
                if self.node(name) in {w.node for w in self.live(self.queues[name])}:
                    waiting.discard(name)
            time.sleep(0.05)

    def log_of(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (main process and pool child), as a crash would."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._forget(name)

    def _forget(self, name: str) -> None:
        """What a killed worker leaves: its pidbox binding, and its registry entry (it would lapse in 3 s)."""
        forget_celery_nodes(self.redis_url, [self.node(name)])
        client = redis.Redis.from_url(self.redis_url)
        forget_worker(client, WORKERS_PREFIX, self.node(name), [self.queues.pop(name)])
        client.close()

    def stop_all(self) -> None:
        nodes = [self.node(name) for name in self.procs]
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            del self.procs[name]
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
                self._forget(name)
        forget_celery_nodes(self.redis_url, nodes)


def delete_queue_keys(redis_url: str, queue: str) -> None:
    """Remove this session's queue lists and bindings, and the un-acknowledged messages a killed worker left.

    Only what names our unique queue: the transport's ``unacked`` hash is shared by every queue on this
    Redis, so only its entries routed to our queues are removed (else the transport would restore them an
    hour later, re-creating our queue).
    """
    import json

    client = redis.Redis.from_url(redis_url)
    keys = [
        *client.scan_iter(match=f"{queue}*", count=1000),
        *client.scan_iter(match=f"_kombu.binding*.{queue}*"),  # kombu names them binding / binding_permanent
    ]
    if keys:
        client.delete(*keys)
    for tag, raw in client.hscan_iter("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if isinstance(routing_key, str) and routing_key.startswith(queue):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.close()


@pytest.fixture(scope="session")
def celery_workers(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """Two worker processes (prefork, one slot each) on a queue of their own, for the whole session."""
    from barrierflow.workers import app, configure, settings_of

    queue = f"bftest-{SESSION}-q-{uuid.uuid4().hex[:8]}"
    saved = settings_of(app)
    # This process is the coordinator: same broker, same Redis, and CeleryDispatcher(app) sends to our queue
    # and finds the workers in the registry under their prefix.
    configure(app, redis_url=redis_url, broker_url=redis_url, queue=queue, prefix=WORKERS_PREFIX)
    previous_url = os.environ.get("BARRIERFLOW_REDIS_URL")
    os.environ["BARRIERFLOW_REDIS_URL"] = redis_url  # the handlers' side channel, in-process runs
    pool = WorkerPool(redis_url, queue, tmp_path_factory.mktemp("workers"))
    try:
        names = [f"bftest-w{i}-{queue[-6:]}" for i in (1, 2)]
        for name in names:
            pool.start(name)
        pool.wait_ready(names)
        yield pool
    finally:
        pool.stop_all()
        delete_queue_keys(redis_url, queue)
        delete_prefix(redis_url, SIDE_PREFIX)
        configure(app, saved)
        if previous_url is None:
            os.environ.pop("BARRIERFLOW_REDIS_URL", None)
        else:
            os.environ["BARRIERFLOW_REDIS_URL"] = previous_url


@pytest.fixture
def redis_store(redis_url: str, real_redis_prefix: str):
    from barrierflow.broker import RedisStore

    return RedisStore.from_url(redis_url, prefix=real_redis_prefix)
