"""The Celery app of barrierflow's workers (``celery -A barrierflow.workers.app worker``), and ``configure``.

Its settings come from the environment when this module is imported (``workers/config.py`` lists the variables
and their local defaults), and from ``configure(app, ...)`` afterwards: code and the CLI's flags call it, and
what they pass wins over the environment, whatever was imported first. ``configure`` also drops the broker
connections the app already opened, so the next message goes to the broker it names.

What every configuration keeps:

* msgpack, json accepted; pickle refused. A task's payload is ``engine.codec`` bytes (a msgpack ``bin``
  inside Celery's msgpack body), so nothing in a message is ever unpickled or imported by name.
* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its task ran,
  and a task whose pool process died is given back to the queue. ``worker_prefetch_multiplier = 1``: a worker
  process holds one task at a time, so a long task never strands a second one behind it.
* No result backend: results travel as fenced Redis records (``broker/results.py``), not Celery results.
* ``visibility_timeout``: must exceed the longest task; socket timeouts for the broker's connections; see
  ``workers/config.py``.
* A worker lists itself in the worker registry while it consumes (``workers/presence.py``, a consumer
  bootstep; ``broker/worker_registry.py``): coordinators, the CLI and health checks read it there instead of
  broadcasting to the workers, whose replies would leave keys without a TTL in the broker's Redis. Remote
  control stays enabled (``worker_enable_remote_control``: revoke, ``add_consumer``, shutdown, Flower).
  Celery's ``control_queue_expires`` (10 s) and ``control_queue_ttl`` (300 s) are left at their defaults: they
  cannot stop the leak. kombu's Redis transport applies a queue's ``x-expires`` only on the channel that
  declared the queue, so a worker's late reply re-creates the caller's reply list without one, and it does
  not implement ``x-message-ttl`` at all (kombu 5.7, ``transport/redis.py``). Not asking for replies is the
  fix: ``barrierflow worker`` also runs without mingle, whose start-up ``hello`` asks every worker.
* The modules in ``imports`` (``BARRIERFLOW_IMPORTS``) are imported when a worker starts (Celery's
  ``imports``), so their ``@register_workflow`` factories are known before the first task arrives.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from kombu import pools

from barrierflow.engine.log_context import JsonFormatter

from .config import DEFAULT_HEARTBEAT, DEFAULT_PACK_SIZE, Settings
from .presence import WorkerPresence

#: Keys of ``app.conf`` that are barrierflow's, not Celery's (read by ``CeleryDispatcher(app)`` and the tasks).
_OWN_KEYS = (
    "barrierflow_redis_url",
    "barrierflow_broker_url",
    "barrierflow_prefix",
    "barrierflow_worker_slots",
    "barrierflow_worker_heartbeat",
    "barrierflow_pack_size",
)


def settings_of(app: Celery) -> Settings:
    """The settings ``app`` uses now: those of its last ``configure``, else the environment's."""
    conf = app.conf
    if conf.get("barrierflow_redis_url") is None:
        return Settings.from_env()
    return Settings(
        redis_url=conf.barrierflow_redis_url,
        broker_url=conf.get("barrierflow_broker_url"),
        result_backend=conf.result_backend,
        imports=tuple(conf.imports or ()),
        prefix=conf.barrierflow_prefix,
        queue=conf.task_default_queue,
        visibility_timeout=float(conf.broker_transport_options["visibility_timeout"]),
        worker_slots=conf.get("barrierflow_worker_slots"),
        worker_heartbeat=float(conf.get("barrierflow_worker_heartbeat") or DEFAULT_HEARTBEAT),
        pack_size=int(conf.get("barrierflow_pack_size") or DEFAULT_PACK_SIZE),
    )


def configure(app: Celery, settings: Settings | None = None, /, **overrides: Any) -> Settings:
    """Make ``app`` use ``settings`` with ``overrides`` on top; return the settings now in effect.

    ``settings`` defaults to what the app uses now, so ``configure(app, prefix="p")`` changes the prefix
    alone; ``overrides`` are ``Settings`` fields, and ``None`` values are ignored (an option not given).
    Leaving ``broker_url`` unset keeps the broker on the Redis URL. Broker connections that the app already
    holds are closed, and its producers, queues and routes rebuilt, so nothing keeps talking to the old broker.
    """
    new = (settings if settings is not None else settings_of(app)).replace(**overrides)
    app.conf.update(
        broker_url=new.broker,
        broker_connection_retry_on_startup=True,
        broker_transport_options=new.broker_transport_options(),
        result_backend=new.result_backend,
        task_ignore_result=True,
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_accept_content=["msgpack", "json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=new.queue,
        imports=new.imports,
        **dict(
            zip(
                _OWN_KEYS,
                (
                    new.redis_url,
                    new.broker_url,
                    new.prefix,
                    new.worker_slots,
                    new.worker_heartbeat,
                    new.pack_size,
                ),
                strict=True,
            )
        ),
    )
    _drop_connections(app)
    return new


def _drop_connections(app: Celery) -> None:
    """Forget what the app built from its old configuration (Celery caches it on first use).

    The app's connection pool is also kombu's process-wide pool for that broker (``kombu.pools``), and so is
    the producer pool built on it: both leave kombu's registry with it, or the next use of the same broker
    URL would get the closed pool back ("Acquire on closed pool").
    """
    pool = app._pool
    if pool is not None:
        app._pool = None
        pool.force_close_all()
        for group in (pools.connections, pools.producers):
            for key, held in list(group.items()):
                if held is pool or getattr(held, "connections", None) is pool:
                    dict.pop(group, key)  # keys are already eqhash()es: skip its __delitem__
    app.__dict__.pop("amqp", None)  # a cached property: producer pool, queues and routes of the old config


app = Celery("barrierflow", include=["barrierflow.workers.tasks"])
app.steps["consumer"].add(WorkerPresence)  # the worker registry (workers/presence.py)
configure(app, Settings.from_env())


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger: Any = None, **_: Any) -> None:
    """``BARRIERFLOW_LOG_FORMAT=json`` (``barrierflow worker --log-format json``): the worker's log lines as
    JSON objects, with the task's ``run_id``, ``instance_id`` and ``trace_id`` (``engine/log_context.py``)."""
    if os.environ.get("BARRIERFLOW_LOG_FORMAT", "text") != "json" or logger is None:
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
