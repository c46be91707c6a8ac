"""The Lua scripts of the Redis store, read from the ``.lua`` files beside this module.

Each script is registered with ``client.register_script``: calls go out as ``EVALSHA`` and redis-py loads
the script and retries once when the server answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). Each
file's header states its KEYS, ARGV and replies. Helpers shared by several scripts live in ``*_lib.lua`` files
prepended to them: ``checkpoint_lib.lua`` to the scripts that drop heads (so retention and delete share one
definition of "drop") and to the run queue's journaled write (which runs the fenced write's own code),
``task_lib.lua`` to the worker's scripts (one definition of a task copy's fence), ``rq_lib.lua`` to the run
queue's scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

#: The run queue's scripts, each with ``rq_lib.lua`` in front.
QUEUE_SCRIPTS = (
    "rq_submit",
    "rq_start",
    "rq_commit",
    "rq_events",
    "rq_finish",
    "rq_cancel",
    "rq_requeue",
    "rq_reap",
)

#: Script -> the helper files prepended to it, in order.
_LIBRARIES = {
    "fenced_write": ("checkpoint_lib",),
    "delete_record": ("checkpoint_lib",),
    "put_result": ("task_lib",),
    "claim": ("task_lib",),
    **{name: ("rq_lib",) for name in QUEUE_SCRIPTS},
    "rq_commit": ("checkpoint_lib", "rq_lib"),
}


def milliseconds(seconds: float) -> int:
    """Seconds as the whole, positive milliseconds the scripts take (``PX``/``PEXPIRE``)."""
    return max(1, round(seconds * 1000))


@cache
def script_source(name: str) -> str:
    """The text of ``broker/<name>.lua``, with the shared helpers in front where the script uses them."""
    package = resources.files(__package__)
    text = package.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    for library in reversed(_LIBRARIES.get(name, ())):
        text = package.joinpath(f"{library}.lua").read_text(encoding="utf-8") + "\n" + text
    return text


@dataclass(frozen=True, slots=True)
class Scripts:
    """The store's scripts, bound to one client."""

    acquire: AsyncScript
    renew: AsyncScript
    release: AsyncScript
    fenced_write: AsyncScript
    read_record: AsyncScript
    delete_record: AsyncScript
    own_key: AsyncScript

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        return cls(**{name: client.register_script(script_source(name)) for name in cls.__slots__})
