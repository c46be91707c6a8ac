"""How barrierflow opens Redis clients: settings for long blocking waits, dead connections and many runs.

redis-py's defaults do not fit a coordinator that blocks on a notify list while handlers run for minutes,
and that drives a thousand runs at once (redis-py 8.2, ``redis/_defaults.py`` and ``asyncio/connection.py``):

* ``socket_timeout`` is 5 s. A ``BRPOP`` that blocks 30 s times out on the client before the server answers:
  "Timeout reading from ...". A blocking wait must therefore be shorter than the socket timeout: both are set
  here, together (``blocking_limit`` is the longest a blocking command may block on a client).
* The asyncio ``ConnectionPool`` holds at most 100 connections and raises ``MaxConnectionsError`` on the
  101st concurrent command instead of waiting. ``BlockingConnectionPool`` makes the command wait up to
  ``pool_timeout`` for a free connection; ``max_connections`` sizes it (per event loop). Blocking waits
  get a pool of their own (``max_blocking_connections``; ``RedisStore.blocking_client``), so waiting runs
  never hold the connections that lease renewals need.
* ``health_check_interval`` is 0: a connection idle behind a NAT or a failover may be half-open, and the
  first command on it would wait a whole socket timeout. With an interval, a connection idle that long is
  checked with a ``PING`` before use.
* ``Retry``: a command failing with ``ConnectionError``/``TimeoutError`` is retried on a fresh connection
  with exponential backoff and jitter, a few times (redis-py's default is 10 retries, which multiplies the
  worst case of one call by 11). A caller that must finish in bounded time (the lease renewal) also bounds
  the call itself: see ``RedisStore.renew``.

``RedisOptions`` holds these settings; ``async_client`` and ``sync_client`` build clients from them. Options a
caller passes by name (any redis-py keyword) win over the defaults here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool as AsyncBlockingPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

#: Fraction of the socket timeout a blocking command may block (the rest is the reply's margin).
BLOCKING_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Client settings. Seconds everywhere; ``max_connections`` counts connections per event loop."""

    socket_timeout: float = 30.0
    socket_connect_timeout: float = 5.0
    health_check_interval: float = 15.0
    retries: int = 3
    max_connections: int = 100
    pool_timeout: float = 60.0
    max_blocking_connections: int = 1000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            least = 0 if name == "retries" else 1e-9  # retries may be 0; the rest must be positive
            if not isinstance(value, int | float) or value < least:
                raise ValueError(f"redis option {name} must be a positive number, not {value!r}")

    @classmethod
    def split(cls, options: dict[str, Any]) -> tuple[RedisOptions, dict[str, Any]]:
        """Take this class's fields out of ``options`` (redis-py keywords stay in the second part)."""
        rest = dict(options)
        mine = {name: rest.pop(name) for name in cls.__dataclass_fields__ if name in rest}
        return cls(**mine), rest

    def for_waiting(self) -> RedisOptions:
        """The options of the pool for blocking waits: ``max_blocking_connections`` connections."""
        return dataclasses.replace(self, max_connections=self.max_blocking_connections)

    def connection_kwargs(self, given: dict[str, Any], *, asynchronous: bool) -> dict[str, Any]:
        """redis-py connection keywords: ours, then what the caller gave (the caller wins).

        The retry covers ``ConnectionError`` and ``TimeoutError`` (redis-py's ``Retry`` default).
        """
        backoff = ExponentialWithJitterBackoff(base=0.05, cap=1.0)
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "socket_keepalive": True,
            "health_check_interval": self.health_check_interval,
            "retry": (AsyncRetry if asynchronous else Retry)(backoff, self.retries),
            **given,
        }


def async_client(url: str, options: RedisOptions, **given: Any) -> AsyncRedis:
    """A redis.asyncio client on a blocking pool of its own (``aclose()`` closes the pool too)."""
    pool = AsyncBlockingPool.from_url(
        url,
        max_connections=options.max_connections,
        timeout=options.pool_timeout,
        **options.connection_kwargs(given, asynchronous=True),
    )
    return AsyncRedis.from_pool(pool)


def sync_client(url: str, options: RedisOptions | None = None, **given: Any) -> redis.Redis:
    """A synchronous client (a worker process, its claim refresher) with the same timeouts and retries."""
    options = options or RedisOptions()
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=options.max_connections,
        timeout=options.pool_timeout,
        **options.connection_kwargs(given, asynchronous=False),
    )
    return redis.Redis.from_pool(pool)


def blocking_limit(client: Any, default: float = 30.0) -> float:
    """The longest a blocking command (``BRPOP``) may block on ``client`` without outliving its socket timeout."""
    pool = getattr(client, "connection_pool", None)
    timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout", default)
    if timeout is None:  # no socket timeout: any wait is safe
        return default
    return max(0.01, float(timeout) * BLOCKING_SHARE)
