"""``InProcessCeleryDispatcher``: the Celery path without Celery, for tests of users' own workflows.

It is a ``CeleryDispatcher`` in everything but the transport: a superstep is planned into tasks, encoded into
the payloads a worker receives (``workers/wire.py``), and each payload is handed, in a thread of this process,
to the code a Celery worker runs for it (``tasks.WorkerProcess.handle``). That code decodes the payload, finds
the workflow by its registered name, checks the graph signature, runs the handlers on its own event loop, and
writes the encoded result as a fenced record to the store's Redis, where the dispatcher collects it.

So a test through it fails where production would: a message or state of a type that is not registered, a
workflow that is not ``@register_workflow``-ed, a graph that differs from the registered factory's, a handler
that relies on executor attributes or on objects of the test's event loop.

The tasks of a superstep run one at a time, like one worker process with one slot. What it does not cover:
Celery and kombu themselves (the broker, acknowledgements, redelivery after a crash).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import redis

from .dispatcher import CeleryDispatcher, TaskCopy
from .tasks import WorkerProcess

if TYPE_CHECKING:
    from barrierflow.broker import RedisStore


class InProcessCeleryDispatcher(CeleryDispatcher):
    """Runs each task through a Celery worker's code, in a thread of this process, over ``store``'s Redis.

    ``worker_client``: the synchronous client the worker side writes results with. Defaults to one on the same
    fakeredis server as the store's client; pass one for a store on a real Redis. Other options are
    ``CeleryDispatcher``'s (``slots`` defaults to 2: there is no worker registry to read).
    """

    def __init__(
        self, store: RedisStore, *, worker_client: redis.Redis | None = None, slots: int = 2, **options: Any
    ) -> None:
        super().__init__(store=store, slots=slots, **options)
        self.worker = WorkerProcess(worker_client if worker_client is not None else _fake_twin(store))
        self._one_at_a_time = threading.Lock()  # one worker loop: tasks of concurrent runs take turns

    def _publish(self, packs: list[list[TaskCopy]]) -> None:
        """Instead of sending the packs to a queue (called in a thread by the dispatcher's packer)."""
        with self._one_at_a_time:
            for pack in packs:
                if len(pack) == 1:
                    self.worker.handle(pack[0].payload, pack[0].traceparent)
                else:
                    self.worker.handle_pack(
                        [copy.payload for copy in pack], traceparents=[copy.traceparent for copy in pack]
                    )

    def close(self) -> None:
        """Close the worker side's event loop and client (``aclose`` does it too)."""
        self.worker.close()

    async def aclose(self) -> None:
        await super().aclose()
        self.close()


def _fake_twin(store: RedisStore) -> redis.Redis:
    """A synchronous fakeredis client on the store's fakeredis server."""
    server = store.client.connection_pool.connection_kwargs.get("server")
    if server is None:
        raise ValueError(
            "InProcessCeleryDispatcher: the store is not on fakeredis; pass worker_client=redis.Redis(...) "
            "connected to the store's Redis"
        )
    import fakeredis

    return fakeredis.FakeRedis(server=server)
