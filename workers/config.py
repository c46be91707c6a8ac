"""Distributed-mode settings: the environment gives the defaults, code and command-line flags override them.

``barrierflow.workers.app`` applies ``Settings.from_env()`` when it is imported, so ``celery -A
barrierflow.workers.app worker`` works with nothing but environment variables. Code (and the CLI's flags) call
``barrierflow.workers.configure(app, redis_url=..., prefix=...)`` to change them afterwards; what they pass wins
over the environment whatever was imported first.

==================================  ===============================  ============================================
variable                            default                          meaning
==================================  ===============================  ============================================
``BARRIERFLOW_REDIS_URL``           ``redis://localhost:6379/0``     the store's Redis; workers write results there
``BARRIERFLOW_BROKER_URL``          the Redis URL                    Celery's broker
``BARRIERFLOW_RESULT_BACKEND``      unset (no Celery results)        only for plain Celery tasks of your own;
                                                                     barrierflow's results never use it
``BARRIERFLOW_IMPORTS``             empty                            comma-separated modules defining workflows
``BARRIERFLOW_PREFIX``              ``barrierflow``                  key prefix (``RedisStore``'s default too)
``BARRIERFLOW_QUEUE``               ``barrierflow``                  queue the tasks go to and workers consume
``BARRIERFLOW_VISIBILITY_TIMEOUT``  ``3600``                         seconds; see below
``BARRIERFLOW_WORKER_SLOTS``        unset (from the worker registry) task slots the dispatcher plans for
``BARRIERFLOW_WORKER_HEARTBEAT``    ``5``                            seconds between a worker's registry beats;
                                                                     its entry lapses after three missed ones
``BARRIERFLOW_PACK_SIZE``           ``64``                           task copies of several instances sent in
                                                                     one Celery task at most (1: no packing)
``BARRIERFLOW_LOG_FORMAT``          ``text``                         ``json``: one JSON object per log line, with
                                                                     the task's run, instance and trace ids
==================================  ===============================  ============================================

The visibility timeout is how long the Redis transport waits for an un-acknowledged message before giving it
to another worker. Tasks are acknowledged late (after they ran), so it must exceed the longest task: the
sum of the handler times of one task's deliveries. Shorter, and a task still running gets a twin (harmless:
the first result wins, the duplicate is ignored, but the work is done twice). A killed worker's message also
waits this long before Celery redelivers it; the dispatcher does not wait for that, it re-sends a missing task
after its own ``redispatch_after`` deadline.

The broker's own Redis connections (kombu's transport) get timeouts too: kombu passes ``socket_timeout=None``
to redis-py, so a publish on a half-open connection would wait forever. ``broker_transport_options`` sets a
socket timeout far above kombu's 1 s ``BRPOP`` polling, keepalive, health checks and a retry on timeout.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "barrierflow"
DEFAULT_QUEUE = "barrierflow"
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
DEFAULT_HEARTBEAT = 5.0
DEFAULT_PACK_SIZE = 64
TASK_NAME = "barrierflow.run_batches"
#: The task of a pack: the copies of several instances' supersteps that were ready together.
PACK_TASK_NAME = "barrierflow.run_pack"
#: The Celery task header that carries the superstep span's W3C trace context (when tracing is on); a pack
#: task carries the list of its copies' contexts (or ``None`` each) in ``TRACEPARENTS``.
TRACEPARENT = "traceparent"
TRACEPARENTS = "barrierflow_traceparents"


#: kombu Redis transport: socket timeouts above its 1 s BRPOP poll, keepalive, checks (see the module doc).
BROKER_SOCKET_OPTIONS = {
    "socket_timeout": 30.0,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 25,
    "retry_on_timeout": True,
}


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the Celery app and the dispatcher need to agree on; ``workers.app.configure`` applies it.

    ``broker_url=None`` means "the Redis URL": the broker follows ``redis_url`` when only that is changed.
    """

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = None
    result_backend: str | None = None
    imports: tuple[str, ...] = ()
    prefix: str = DEFAULT_PREFIX
    queue: str = DEFAULT_QUEUE
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    worker_slots: int | None = None
    worker_heartbeat: float = DEFAULT_HEARTBEAT
    pack_size: int = DEFAULT_PACK_SIZE

    @property
    def broker(self) -> str:
        """The broker URL in effect."""
        return self.broker_url or self.redis_url

    def broker_transport_options(self) -> dict[str, object]:
        return {"visibility_timeout": self.visibility_timeout, **BROKER_SOCKET_OPTIONS}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        slots = env.get("BARRIERFLOW_WORKER_SLOTS")
        return cls(
            redis_url=env.get("BARRIERFLOW_REDIS_URL") or DEFAULT_REDIS_URL,
            broker_url=env.get("BARRIERFLOW_BROKER_URL") or None,
            result_backend=env.get("BARRIERFLOW_RESULT_BACKEND") or None,
            imports=_split(env.get("BARRIERFLOW_IMPORTS", "")),
            prefix=env.get("BARRIERFLOW_PREFIX") or DEFAULT_PREFIX,
            queue=env.get("BARRIERFLOW_QUEUE") or DEFAULT_QUEUE,
            visibility_timeout=float(env.get("BARRIERFLOW_VISIBILITY_TIMEOUT") or DEFAULT_VISIBILITY_TIMEOUT),
            worker_slots=int(slots) if slots else None,
            worker_heartbeat=float(env.get("BARRIERFLOW_WORKER_HEARTBEAT") or DEFAULT_HEARTBEAT),
            pack_size=int(env.get("BARRIERFLOW_PACK_SIZE") or DEFAULT_PACK_SIZE),
        )

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied; ``None`` values are ignored (an option the caller did not give).

        ``imports`` may be a comma-separated string or a sequence of module names.
        """
        given = {name: value for name, value in overrides.items() if value is not None}
        unknown = given.keys() - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown barrierflow worker setting(s): {', '.join(sorted(unknown))}")
        imports = given.get("imports")
        if isinstance(imports, str):
            given["imports"] = _split(imports)
        elif imports is not None:
            given["imports"] = tuple(imports)
        return dataclasses.replace(self, **given)
