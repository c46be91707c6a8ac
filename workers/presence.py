"""A worker's presence in the registry (``broker/worker_registry.py``): listed while it consumes, gone when it stops.

``WorkerPresence`` is a bootstep of the worker's consumer (``app.steps["consumer"]``, added in ``workers/app.py``),
so it runs in the worker's main process, for barrierflow's app only, and follows the consumer's life:

* **start** (the task consumer exists): a daemon thread registers the worker on the queues it consumes and
  beats every ``interval`` seconds (``BARRIERFLOW_WORKER_HEARTBEAT``). Each beat reads the queues again
  (``add_consumer`` / ``cancel_consumer`` change them) and leaves the ones the worker no longer consumes.
* **stop** (a warm shutdown begins, or the broker connection was lost and the consumer restarts): the thread
  stops and the entry is removed at once, before the pool finishes the tasks in hand, because from then on
  the worker takes no new task. A consumer that restarts registers again.
* **SIGKILL, out of memory, power loss**: nothing runs; the entry lapses ``MISSED_BEATS`` intervals after the
  last beat, and readers stop counting it then.

A thread rather than a timer of Celery's event loop: with ``-P solo`` a handler runs on the loop's own thread
for minutes, and the worker would look dead meanwhile; a thread gets the GIL every few milliseconds whatever the
handlers do. A beat that fails (Redis unreachable) is logged once per outage and retried at the next one; the
entry lapses meanwhile, which is what a coordinator that cannot reach Redis would conclude anyway.

The entry carries the wire ``LAYOUT`` (``workers/wire.py``), so a coordinator of another barrierflow version
can say so before it sends a task the worker would refuse.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from importlib import metadata
from typing import Any

import redis
from celery import bootsteps

from barrierflow.broker.connection import RedisOptions, sync_client
from barrierflow.broker.worker_registry import WorkerEntry, WorkerRegistration

from .config import DEFAULT_HEARTBEAT, DEFAULT_PREFIX, DEFAULT_REDIS_URL
from .wire import LAYOUT

logger = logging.getLogger("barrierflow.workers")

#: The heartbeat's client: short timeouts (a beat that hangs is a missed beat), two connections at most.
PRESENCE_REDIS = RedisOptions(socket_timeout=5.0, socket_connect_timeout=5.0, retries=1, max_connections=2)


def _version() -> str:
    try:
        return metadata.version("barrierflow")
    except metadata.PackageNotFoundError:  # running from a checkout that was not installed
        return ""


class Heartbeat:
    """The thread that keeps one worker's entry alive; ``stop`` removes the entry."""

    def __init__(self, consumer: Any, registration: WorkerRegistration, interval: float) -> None:
        self.consumer = consumer
        self.registration = registration
        self.interval = interval
        self.started_at = time.time()
        self.queues: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._failing = False
        self._beats = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="bfw-presence")

    def start(self) -> None:
        self._thread.start()

    def entry(self) -> WorkerEntry:
        c = self.consumer
        task_consumer = c.task_consumer
        queues = tuple(q.name for q in list(task_consumer.queues)) if task_consumer else self.queues
        autoscaler = getattr(c.controller, "autoscaler", None)
        slots = autoscaler.max_concurrency if autoscaler else (c.pool.limit or 1)
        return WorkerEntry(
            node=c.hostname,
            queues=queues,
            slots=int(slots),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            layout=LAYOUT,
            interval=self.interval,
            pool=type(c.pool).__module__.rpartition(".")[2],
            version=_version(),
        )

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.interval):
                return

    def beat(self) -> None:
        try:
            entry = self.entry()
            left = set(self.queues) - set(entry.queues)
            other = self.registration.beat(entry)
            if left:
                self.registration.leave(left)
            self.queues = entry.queues
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                logger.warning("worker registry: heartbeat of %s failed: %s", self.registration.node, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("worker registry: heartbeat of %s works again", self.registration.node)
        self._failing = False
        self._beats += 1
        if other is not None and self._beats > 1:  # at the first beat: the entry of a killed predecessor
            logger.warning(
                "worker registry: another worker process (pid %s on %s) registers as %s too: give each worker "
                "a node name of its own (--hostname); coordinators count only one of them",
                other.pid,
                other.host,
                self.registration.node,
            )

    def stop(self) -> None:
        """Stop beating and remove the entry (the worker takes no new task from now on)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(PRESENCE_REDIS.socket_timeout * 2)
        try:
            self.registration.leave(self.queues)
        except (redis.RedisError, OSError) as exc:
            logger.warning(
                "worker registry: could not remove %s (it lapses in %g s): %s",
                self.registration.node,
                self.interval * 3,
                exc,
            )
        finally:
            self.registration.client.close()


class WorkerPresence(bootsteps.StartStopStep):
    """Consumer bootstep: the worker is in the registry from the start of its task consumer to its stop."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.heartbeat: Heartbeat | None = None

    def start(self, c: Any) -> None:
        if self.heartbeat is not None:
            return
        conf = c.app.conf
        client = sync_client(conf.get("barrierflow_redis_url") or DEFAULT_REDIS_URL, PRESENCE_REDIS)
        registration = WorkerRegistration(
            client, conf.get("barrierflow_prefix") or DEFAULT_PREFIX, c.hostname
        )
        interval = float(conf.get("barrierflow_worker_heartbeat") or DEFAULT_HEARTBEAT)
        self.heartbeat = Heartbeat(c, registration, interval)
        self.heartbeat.start()

    def stop(self, c: Any) -> None:
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()

    shutdown = stop
