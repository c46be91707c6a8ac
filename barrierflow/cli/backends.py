"""Where a command's instances live: the embedded ``MemoryStore``, or Redis (+ Celery workers).

``broker``, ``workers``, ``redis`` and ``celery`` are imported here, inside the functions, so the embedded
mode never loads them. Every Redis URL carries where it came from (``--redis``, the environment, or the
default), so an error can say what to change instead of suggesting a flag the user already passed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from barrierflow.engine import MemoryStore, Store

from .errors import EXIT_BAD_INPUT, EXIT_UNREACHABLE, CliError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "barrierflow"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A Redis URL and where it came from, for messages: ``--redis``, ``BARRIERFLOW_REDIS_URL`` or ``default``."""

    url: str
    source: str

    @classmethod
    def resolve(cls, flag: str | None) -> RedisTarget:
        """``--redis`` when given, else ``BARRIERFLOW_REDIS_URL``, else the local default."""
        if flag:
            return cls(flag, "--redis")
        env = os.environ.get("BARRIERFLOW_REDIS_URL")
        if env:
            return cls(env, "BARRIERFLOW_REDIS_URL")
        return cls(DEFAULT_REDIS_URL, "default")

    def advice(self) -> str:
        """What to do when it does not answer."""
        if self.source == "--redis":
            return "check the URL given with --redis, and that Redis runs there"
        if self.source == "BARRIERFLOW_REDIS_URL":
            return "check BARRIERFLOW_REDIS_URL (or pass --redis URL), and that Redis runs there"
        return (
            "no --redis and no BARRIERFLOW_REDIS_URL, so this is the local default: start Redis "
            "(docker compose up -d redis, or redis-server), or pass --redis URL"
        )


def reason(exc: BaseException) -> str:
    """``Type: message`` of an exception, without a trailing period (messages go on after it)."""
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


async def redis_store(
    target: RedisTarget, prefix: str, checkpoint_ttl: float | None = None, **options: Any
) -> Store:
    """A ``RedisStore`` that has answered a ``PING`` (``CliError`` with exit code 3 otherwise).

    ``options`` go to ``RedisStore.from_url`` (``lock_ttl=``...).
    """
    try:
        from barrierflow.broker import RedisStore
    except ImportError as exc:
        raise CliError(f"the Redis store is not available: {reason(exc)}", EXIT_UNREACHABLE) from exc
    try:
        store = RedisStore.from_url(
            target.url, prefix=prefix, checkpoint_ttl=checkpoint_ttl, socket_connect_timeout=3.0, **options
        )
    except ValueError as exc:
        raise CliError(
            f"invalid Redis URL {redact(target.url)!r} (from {target.source}): {reason(exc)}", EXIT_BAD_INPUT
        ) from exc
    try:
        await store.client.ping()
    except Exception as exc:
        await store.aclose()
        raise CliError(
            f"cannot reach Redis at {redact(target.url)}: {reason(exc)}; {target.advice()}", EXIT_UNREACHABLE
        ) from exc
    return store


async def close_store(store: Store) -> None:
    closer = getattr(store, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):  # best effort: the process is about to exit anyway
            await closer()


def celery_app(**settings: Any) -> Any:
    """The Celery app, configured with ``settings`` (``workers.Settings`` fields; ``None`` = not given).

    Whatever was imported before (a workflow module may import ``barrierflow.workers``), what the flags say is
    what the app uses from here on; settings not given keep the environment's.
    """
    try:
        from barrierflow.workers import app, configure
    except ImportError as exc:
        raise CliError(
            f"the Celery workers package is not available: {reason(exc)}", EXIT_UNREACHABLE
        ) from exc
    configure(app, **settings)
    return app


def check_broker(app: Any) -> None:
    """Fail fast (exit 3) when Celery's broker cannot be reached, instead of retrying forever."""
    url = app.conf.broker_url or ""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except ImportError as exc:  # the transport's own dependencies: an install problem, not a network one
        raise CliError(
            f"Celery's transport for {redact(url)} cannot load: {reason(exc)}; install barrierflow with its "
            "dependencies (pip install barrierflow, which brings celery[redis])",
            EXIT_UNREACHABLE,
        ) from exc
    except Exception as exc:
        raise CliError(
            f"cannot reach the Celery broker at {redact(url)}: {reason(exc)}; check --broker or "
            "BARRIERFLOW_BROKER_URL (the broker defaults to the Redis URL), and that it runs",
            EXIT_UNREACHABLE,
        ) from exc


def celery_dispatcher(app: Any, store: Store) -> Any:
    """The coordinator's side of Celery: results are read from the store's Redis, under its prefix."""
    try:
        from barrierflow.workers import CeleryDispatcher
    except ImportError as exc:
        raise CliError(f"the Celery dispatcher is not available: {reason(exc)}", EXIT_UNREACHABLE) from exc
    return CeleryDispatcher(app, store=store)
