"""Distributed-mode settings, read from the environment with defaults that work on a local Redis.

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
``BARRIERFLOW_WORKER_SLOTS``        unset (asked from the workers)   task slots the dispatcher plans for
==================================  ===============================  ============================================

The visibility timeout is how long the Redis transport waits for an un-acknowledged message before giving it
to another worker. Tasks are acknowledged late (after they ran), so it must exceed the longest task: the
sum of the handler times of one task's deliveries. Shorter, and a task still running gets a twin (harmless:
the first result wins, the duplicate is ignored, but the work is done twice). A killed worker's message also
waits this long before Celery redelivers it; the dispatcher does not wait for that, it re-sends a missing task
after its own ``redispatch_after`` deadline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "barrierflow"
DEFAULT_QUEUE = "barrierflow"
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
TASK_NAME = "barrierflow.run_batches"


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str
    broker_url: str
    result_backend: str | None
    imports: tuple[str, ...]
    prefix: str
    queue: str
    visibility_timeout: float
    worker_slots: int | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        redis_url = env.get("BARRIERFLOW_REDIS_URL") or DEFAULT_REDIS_URL
        slots = env.get("BARRIERFLOW_WORKER_SLOTS")
        return cls(
            redis_url=redis_url,
            broker_url=env.get("BARRIERFLOW_BROKER_URL") or redis_url,
            result_backend=env.get("BARRIERFLOW_RESULT_BACKEND") or None,
            imports=_split(env.get("BARRIERFLOW_IMPORTS", "")),
            prefix=env.get("BARRIERFLOW_PREFIX") or DEFAULT_PREFIX,
            queue=env.get("BARRIERFLOW_QUEUE") or DEFAULT_QUEUE,
            visibility_timeout=float(env.get("BARRIERFLOW_VISIBILITY_TIMEOUT") or DEFAULT_VISIBILITY_TIMEOUT),
            worker_slots=int(slots) if slots else None,
        )
