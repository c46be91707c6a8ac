"""Where a command's instances live: the embedded ``MemoryStore``, or Redis (+ Celery workers).

``broker``, ``workers``, ``redis`` and ``celery`` are imported here, inside the functions, so the embedded
mode never loads them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from barrierflow.engine import MemoryStore, Store

from .errors import EXIT_BAD_INPUT, EXIT_UNREACHABLE, CliError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "barrierflow"


def env_redis_url() -> str:
    return os.environ.get("BARRIERFLOW_REDIS_URL") or DEFAULT_REDIS_URL


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def memory_store() -> Store:
    return MemoryStore()


async def redis_store(url: str, prefix: str) -> Store:
    """A ``RedisStore`` that has answered a ``PING`` (``CliError`` with exit code 3 otherwise)."""
    try:
        from barrierflow.broker import RedisStore
    except ImportError as exc:
        raise CliError(f"the Redis store is not available: {exc}", EXIT_UNREACHABLE) from exc
    try:
        store = RedisStore.from_url(url, prefix=prefix, socket_connect_timeout=3.0)
    except ValueError as exc:
        raise CliError(f"invalid Redis URL {redact(url)!r}: {exc}", EXIT_BAD_INPUT) from exc
    try:
        await store.client.ping()
    except Exception as exc:
        await store.aclose()
        raise CliError(
            f"cannot reach Redis at {redact(url)}: {type(exc).__name__}: {exc}. Start one "
            "(docker compose up -d redis, or redis-server) or pass --redis URL",
            EXIT_UNREACHABLE,
        ) from exc
    return store


async def close_store(store: Store) -> None:
    closer = getattr(store, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):  # best effort: the process is about to exit anyway
            await closer()


def configure_distributed_env(redis_url: str, prefix: str, broker_url: str | None = None) -> None:
    """Set the variables ``barrierflow.workers.app`` reads at import time, so both sides agree on Redis and prefix.

    The Celery broker defaults to the Redis URL unless ``BARRIERFLOW_BROKER_URL`` (or ``broker_url``) says
    otherwise.
    """
    if "barrierflow.workers.app" in sys.modules:
        return  # already configured in this process (tests import it once)
    os.environ["BARRIERFLOW_REDIS_URL"] = redis_url
    os.environ["BARRIERFLOW_PREFIX"] = prefix
    if broker_url:
        os.environ["BARRIERFLOW_BROKER_URL"] = broker_url


def celery_app() -> Any:
    try:
        from barrierflow.workers.app import app
    except ImportError as exc:
        raise CliError(f"the Celery workers package is not available: {exc}", EXIT_UNREACHABLE) from exc
    return app


def check_broker(app: Any) -> None:
    """Fail fast (exit 3) when Celery's broker cannot be reached, instead of retrying forever."""
    url = app.conf.broker_url or ""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        raise CliError(
            f"cannot reach the Celery broker at {redact(url)}: {type(exc).__name__}: {exc}", EXIT_UNREACHABLE
        ) from exc


def workers_answering(app: Any, timeout: float = 1.5) -> int:
    """How many workers answer a ping (0 when none, or when asking fails)."""
    try:
        replies = app.control.inspect(timeout=timeout).ping()
    except Exception:
        return 0
    return len(replies or {})


def celery_dispatcher(app: Any, store: Store) -> Any:
    """The coordinator's side of Celery: results are read from the store's Redis, under its prefix."""
    try:
        from barrierflow.workers import CeleryDispatcher
    except ImportError as exc:
        raise CliError(f"the Celery dispatcher is not available: {exc}", EXIT_UNREACHABLE) from exc
    return CeleryDispatcher(app, store=store)
