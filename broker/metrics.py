"""Prometheus metrics of the run queue and its coordinators (names are API: DESIGN.md §6, docs/operations.md).

Counters and histograms live in the process's default ``prometheus_client`` registry and count what this
process did: ``RunQueue.submit`` counts submissions, a ``Coordinator`` counts the runs it starts and ends, their
supersteps, checkpoints, deliveries, retries and takeovers. Sum them over every process with PromQL.

Deliveries and retries are counted **on the coordinator**, from the ``executor_completed``/``executor_failed``
and ``executor_retry`` events each superstep reports (a Celery worker ships its events back with its result).
So one scrape target per coordinator covers the Celery workers too: prefork worker processes expose nothing
(no ``prometheus_client`` multiprocess directory to manage). What that misses: the attempts of a task whose
worker died before writing its result (the task is sent again and counted once, by the copy that reports).

The queue's own figures (``barrierflow_queue_depth``, ``barrierflow_queue_oldest_age_seconds``) are read from
Redis when scraped (``QueueCollector``), so every replica reports the same values: alert on one of them, or on
``max()`` across replicas, never on their sum.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from barrierflow.engine.events import EventType, WorkflowEvent

#: ``barrierflow_runs_total{state}`` values.
SUBMITTED, STARTED = "submitted", "started"

RUNS = Counter(
    "barrierflow_runs",
    "Runs by workflow and what happened: submitted, started (each coordinator start, takeovers included), "
    "completed, failed, cancelled.",
    ["workflow", "state"],
)
RUNS_IN_FLIGHT = Gauge("barrierflow_runs_in_flight", "Runs this process's coordinators are driving now.")
SUPERSTEP_SECONDS = Histogram(
    "barrierflow_superstep_duration_seconds",
    "Wall time of one superstep, from its start to its committed checkpoint.",
    ["workflow"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
CHECKPOINT_BYTES = Histogram(
    "barrierflow_checkpoint_bytes",
    "Size of each checkpoint written (head plus keyframe, when one is cut).",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
)
DELIVERIES = Counter(
    "barrierflow_deliveries",
    "Deliveries that ended (completed or failed for good), by workflow and executor.",
    ["workflow", "executor"],
)
RETRIES = Counter(
    "barrierflow_retries",
    "Failed delivery attempts that are tried again (RetryPolicy), by workflow and executor.",
    ["workflow", "executor"],
)
TAKEOVERS = Counter(
    "barrierflow_lease_takeovers",
    "Runs this coordinator took over from a coordinator that died with them (its lease expired).",
)


class RunCounters:
    """Counts one run's events into the metrics; label children cached per executor (no lookup per event)."""

    __slots__ = ("_deliveries", "_retries", "_seconds", "_step_started", "workflow")

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self._deliveries: dict[str | None, Any] = {}
        self._retries: dict[str | None, Any] = {}
        self._seconds: Any = None
        self._step_started = 0.0

    def event(self, event: WorkflowEvent) -> None:
        kind = event.type
        if kind == EventType.EXECUTOR_COMPLETED or kind == EventType.EXECUTOR_FAILED:
            _child(self._deliveries, DELIVERIES, self.workflow, event.executor_id).inc()
        elif kind == EventType.SUPERSTEP_STARTED:
            self._step_started = time.perf_counter()
        elif kind == EventType.SUPERSTEP_COMPLETED:
            if self._step_started:
                if self._seconds is None:
                    self._seconds = SUPERSTEP_SECONDS.labels(self.workflow)
                self._seconds.observe(time.perf_counter() - self._step_started)
                self._step_started = 0.0
        elif kind == EventType.EXECUTOR_RETRY:
            _child(self._retries, RETRIES, self.workflow, event.executor_id).inc()


def _child(cache: dict[str | None, Any], metric: Counter, workflow: str, executor_id: str | None) -> Any:
    child = cache.get(executor_id)
    if child is None:
        child = cache[executor_id] = metric.labels(workflow, executor_id or "")
    return child


_runs: dict[tuple[str, str], Any] = {}  # label children of RUNS: labels() takes a lock and builds a key


def count_run(workflow: str, state: str) -> None:
    child = _runs.get((workflow, state))
    if child is None:
        child = _runs[(workflow, state)] = RUNS.labels(workflow, state)
    child.inc()


# -- the queue, read from Redis at scrape time -----------------------------------------------------------------


class QueueCollector:
    """``barrierflow_queue_depth`` and ``barrierflow_queue_oldest_age_seconds``, read from Redis when scraped.

    The ready stream (``P:rq:ready``) holds one entry per instance with runs to start; the coordinators' group
    has read (``last-delivered-id``) the entries in flight. So the entries after ``last-delivered-id`` are the
    instances waiting for a coordinator, and the first of them has waited longest. An instance with several
    queued runs counts once (its later runs wait for their instance, not for a coordinator). Both read 0 when
    nothing waits; a Redis error yields no sample (the scrape's ``up`` stays 1, the series go stale).
    """

    def __init__(self, client: redis.Redis, ready_key: str, group: str = "coordinators") -> None:
        self.client = client
        self.ready_key = ready_key
        self.group = group
        self._lock = threading.Lock()  # scrapes may come from several server threads

    def figures(self) -> tuple[int, float]:
        """``(depth, oldest age in seconds)`` now."""
        with self._lock:
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.ready_key)
            pipe.xinfo_groups(self.ready_key)
            try:
                length, groups = pipe.execute()
            except redis.ResponseError:  # no stream yet: nothing was ever submitted
                return 0, 0.0
            group = next((g for g in groups if _text(g.get("name")) == self.group), None)
            if group is None:
                waiting, after = length, "-"
            else:
                waiting = max(0, length - int(group.get("pending") or 0))
                after = "(" + _text(group.get("last-delivered-id"))
            if waiting == 0:
                return 0, 0.0
            first = self.client.xrange(self.ready_key, min=after, max="+", count=1)
        if not first:
            return 0, 0.0
        submitted_ms = int(_text(first[0][0]).split("-")[0])
        return waiting, max(0.0, time.time() - submitted_ms / 1000)

    def collect(self) -> Any:
        try:
            depth, age = self.figures()
        except (redis.RedisError, OSError):
            return
        yield GaugeMetricFamily(
            "barrierflow_queue_depth",
            "Instances with runs waiting for a coordinator (read from Redis).",
            depth,
        )
        yield GaugeMetricFamily(
            "barrierflow_queue_oldest_age_seconds",
            "How long the run that waited longest for a coordinator has waited (read from Redis).",
            age,
        )

    def describe(self) -> list[Any]:
        return []  # no describe-time Redis call when registered


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_queue_collectors: dict[tuple[int, str, str], QueueCollector] = {}


def register_queue_collector(
    redis_url: str, prefix: str, registry: CollectorRegistry = REGISTRY
) -> QueueCollector:
    """Register (once per registry, Redis and prefix) the collector of the queue at ``redis_url``/``prefix``."""
    from .connection import sync_client
    from .coordinator_queue import GROUP
    from .keys import KeySpace

    key = (id(registry), redis_url, prefix)
    found = _queue_collectors.get(key)
    if found is None:
        ready = KeySpace(prefix).queue_key("ready")
        found = _queue_collectors[key] = QueueCollector(sync_client(redis_url), ready, GROUP)
        registry.register(found)
    return found
