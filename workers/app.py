"""The Celery app of barrierflow's workers: ``celery -A barrierflow.workers.app worker`` starts one.

Configured from the environment (``workers/config.py`` lists the variables and their local defaults):

* msgpack, json accepted; pickle refused. A task's payload is ``engine.codec`` bytes (a msgpack ``bin``
  inside Celery's msgpack body), so nothing in a message is ever unpickled or imported by name.
* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its task ran,
  and a task whose pool process died is given back to the queue. ``worker_prefetch_multiplier = 1``: a worker
  process holds one task at a time, so a long task never strands a second one behind it.
* No result backend: results travel as fenced Redis records (``broker/results.py``), not Celery results.
* ``visibility_timeout``: must exceed the longest task; see ``workers/config.py``.
* The modules in ``BARRIERFLOW_IMPORTS`` are imported when a worker starts (Celery's ``imports``), so their
  ``@register_workflow`` factories are known before the first task arrives.
"""

from __future__ import annotations

from celery import Celery

from .config import Settings

settings = Settings.from_env()

app = Celery("barrierflow", include=["barrierflow.workers.tasks"])
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": settings.visibility_timeout},
    result_backend=settings.result_backend,
    task_ignore_result=True,
    task_serializer="msgpack",
    result_serializer="msgpack",
    accept_content=["msgpack", "json"],
    result_accept_content=["msgpack", "json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=settings.queue,
    imports=settings.imports,
    # read by workers.CeleryDispatcher(app) and by the tasks (not Celery settings)
    barrierflow_redis_url=settings.redis_url,
    barrierflow_prefix=settings.prefix,
    barrierflow_worker_slots=settings.worker_slots,
)
