"""The tests share a Redis with whoever else uses it, so they leave no key behind; this module checks that.

Everything a test session creates in Redis carries ``SESSION`` in its name: key prefixes, Celery queues, worker
node names. Celery adds keys of its own that do not: kombu's binding tables (``_kombu.binding.<exchange>``, sets
whose members name the bound queues) and ``_kombu.binding_deadlines`` (when to sweep a table nobody refreshes).
A worker that stops cleanly removes its remote-control (pidbox) binding; a SIGKILLed one cannot, and the
deadline entries outlive their tables for an hour or more. ``forget_celery_nodes`` removes exactly what our
workers left; ``leftovers`` lists what still names this session, which the ``redis_url`` fixture requires to be
nothing at the end of the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

#: In the name of every queue, worker node and key prefix this test session creates.
SESSION = f"s{uuid.uuid4().hex[:8]}"

PIDBOX_BINDINGS = ("_kombu.binding.celery.pidbox", "_kombu.binding.reply.celery.pidbox")

# Drops the sweep deadline of every exchange whose binding table no longer exists (emptied sets vanish in
# Redis). Atomic, so a table re-created meanwhile by another client keeps its deadline. Kombu's own sweep
# does the same once the deadline passes; there is nothing left for it to sweep here.
_DROP_STALE_DEADLINES = """
for _, exchange in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[1] .. exchange) == 0 and redis.call('EXISTS', ARGV[2] .. exchange) == 0 then
        redis.call('ZREM', KEYS[1], exchange)
    end
end
"""


def forget_celery_nodes(redis_url: str, nodes: Iterable[str]) -> None:
    """Remove the pidbox bindings of these worker nodes (``name@host``), and deadlines left without a table."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        suffixes = tuple(f"{node}.celery.pidbox".encode() for node in nodes)
        for table in PIDBOX_BINDINGS:
            stale = [m for m in client.smembers(table) if m.endswith(suffixes)]
            if stale:
                client.srem(table, *stale)
        client.eval(
            _DROP_STALE_DEADLINES,
            1,
            "_kombu.binding_deadlines",
            "_kombu.binding.",
            "_kombu.binding_permanent.",
        )
    finally:
        client.close()


def leftovers(redis_url: str, token: str = SESSION) -> list[str]:
    """Keys, binding-table members and unacknowledged messages that name ``token``."""
    import redis

    client = redis.Redis.from_url(redis_url)
    found = [key.decode() for key in client.scan_iter(match=f"*{token}*", count=1000)]
    for table in client.scan_iter(match="_kombu.binding*", count=1000):
        if client.type(table) == b"set":
            found += [f"{table.decode()} member {m!r}" for m in client.smembers(table) if token.encode() in m]
    found += [f"unacked {tag!r}" for tag, raw in client.hscan_iter("unacked") if token.encode() in raw]
    client.close()
    return sorted(found)
