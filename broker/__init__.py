"""barrierflow's Redis layer: the distributed ``Store`` (fenced reservation lock, msgpack checkpoints)."""

from .redis_store import RedisStore

__all__ = ["RedisStore"]
