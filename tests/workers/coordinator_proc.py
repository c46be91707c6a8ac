"""A coordinator process for the failover test: runs ``bfw_long`` on Celery workers until it is killed.

``python tests/workers/coordinator_proc.py REDIS_URL PREFIX QUEUE INSTANCE STEPS DELAY LOCK_TTL``
"""

from __future__ import annotations

import asyncio
import sys


async def main(
    url: str, prefix: str, queue: str, instance_id: str, steps: int, delay: float, ttl: float
) -> None:
    from barrierflow.broker import RedisStore
    from barrierflow.workers import CeleryDispatcher, app
    from tests.workflows_for_workers import bfw_long

    app.conf.broker_url = url
    store = RedisStore.from_url(url, prefix=prefix, lock_ttl=ttl)
    dispatcher = CeleryDispatcher(app, store=store, queue=queue, slots=2, redispatch_after=20)
    wf = bfw_long().build(instance_id=instance_id, store=store, dispatcher=dispatcher)
    result = await wf.run({"step": 1, "steps": steps, "delay": delay})
    print("finished", result.outputs, flush=True)


if __name__ == "__main__":
    url, prefix, queue, instance_id, steps, delay, ttl = sys.argv[1:]
    asyncio.run(main(url, prefix, queue, instance_id, int(steps), float(delay), float(ttl)))
