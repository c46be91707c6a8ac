"""What the CLI knows of the workers, from the worker registry in Redis (``broker/worker_registry.py``).

Nothing here broadcasts to the workers: a Celery ``ping`` or ``inspect`` waits for replies it cannot count,
and a reply that comes late leaves a key without a TTL in the broker's Redis. The registry answers in one
round trip, says who consumes which queue with how many slots, and which barrierflow version each worker runs.

* ``preflight``: the warning a ``run --celery`` prints before it sends anything (or ``None``).
* ``WorkersReport``: ``barrierflow workers``, a listing and a health check (``--node``, ``--queue``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backends import reason, redact

if TYPE_CHECKING:  # redis and celery are imported by the commands that use them, never by the CLI's start
    from barrierflow.broker.worker_registry import WorkerEntry, WorkerRegistry


def _registry(client: Any, prefix: str) -> WorkerRegistry:
    from barrierflow.broker.worker_registry import WorkerRegistry

    return WorkerRegistry(client, prefix)


def _layout() -> str:
    from barrierflow.workers.wire import LAYOUT

    return LAYOUT


def _count(by_queue: dict[str, list[WorkerEntry]]) -> str:
    return ", ".join(f"{queue!r} ({len(workers)})" for queue, workers in sorted(by_queue.items()))


async def preflight(client: Any, prefix: str, queue: str, redis_url: str, start: str) -> str | None:
    """Why a ``--celery`` run's tasks would wait or be refused, or ``None`` when live workers of this
    barrierflow version consume ``queue``. ``start``: the command that starts a worker, for the advice."""
    registry = _registry(client, prefix)
    try:
        workers = await registry.live(queue)
        others = {} if workers else await registry.by_queue()
    except Exception as exc:  # the run itself will report an unreachable Redis; this is only advice
        return f"could not read the worker registry in Redis {redact(redis_url)}: {reason(exc)}"
    if not workers:
        where = f"queue {queue!r} under prefix {prefix!r} in Redis {redact(redis_url)}"
        if others:
            return (
                f"no live worker is registered on {where}; workers there consume {_count(others)}: give the "
                f"workers and this run the same queue (BARRIERFLOW_QUEUE, barrierflow worker --queue). "
                "Deliveries wait in the queue until a worker consumes it"
            )
        return (
            f"no live worker is registered on {where}; deliveries wait in the queue until one starts ({start} "
            f"--queue {queue}, with the same --redis and --prefix)"
        )
    ours = _layout()
    other_versions = [w for w in workers if w.layout != ours]
    if other_versions:
        names = ", ".join(
            f"{w.node} (layout {w.layout}, barrierflow {w.version or '?'})" for w in other_versions
        )
        some = "every live worker" if len(other_versions) == len(workers) else "some live workers"
        return (
            f"{some} on queue {queue!r} run another barrierflow version than this one (wire layout {ours}): "
            f"{names}; they refuse its tasks. Deploy one barrierflow version to coordinators and workers"
        )
    return None


@dataclass
class WorkersReport:
    """The live workers under a prefix (optionally of one queue), and what a health check found missing."""

    prefix: str
    redis_url: str
    queue: str | None
    by_queue: dict[str, list[WorkerEntry]]
    nodes: list[str] = field(default_factory=list)

    @classmethod
    async def read(
        cls, client: Any, prefix: str, redis_url: str, queue: str | None, nodes: list[str]
    ) -> WorkersReport:
        registry = _registry(client, prefix)
        if queue is not None:
            workers = await registry.live(queue)
            by_queue = {queue: workers} if workers else {}
        else:
            by_queue = await registry.by_queue()
        return cls(prefix, redis_url, queue, by_queue, nodes)

    def workers(self) -> list[WorkerEntry]:
        """Each live worker once (a worker consuming two queues is in both), by node name."""
        unique = {w.node: w for workers in self.by_queue.values() for w in workers}
        return [unique[node] for node in sorted(unique)]

    def records(self) -> list[dict[str, Any]]:
        ours = _layout()
        return [{"type": "worker", **w.as_record(), "same_version": w.layout == ours} for w in self.workers()]

    def problems(self) -> list[str]:
        """What the health check asked for and did not find; empty when healthy."""
        where = f"under prefix {self.prefix!r} in Redis {redact(self.redis_url)}"
        scope = f" on queue {self.queue!r}" if self.queue is not None else ""
        live = {w.node for w in self.workers()}
        missing = [
            f"worker {node} is not registered{scope} {where} (not started, stopped, or its heartbeat lapsed)"
            for node in self.nodes
            if node not in live
        ]
        if not self.nodes and not live:
            missing.append(f"no live worker is registered{scope} {where}")
        return missing
