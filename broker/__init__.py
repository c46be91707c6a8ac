"""barrierflow's Redis layer: the distributed ``Store`` (fenced reservation lock, msgpack checkpoints) and the
durable run queue (``RunQueue``) that coordinators take runs from."""

from .redis_store import RedisStore
from .run_queue import RunQueue
from .run_records import InstanceInfo, RunInfo, RunTicket

__all__ = ["InstanceInfo", "RedisStore", "RunInfo", "RunQueue", "RunTicket"]
