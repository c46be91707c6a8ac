"""An instance lives in Redis, not in a process: one process runs it to a pending request and exits; another
answers the request on the same instance id and gets the output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from barrierflow.broker import RedisStore
from barrierflow.engine import RunState
from examples.approval_flow import approval_flow

ROOT = Path(__file__).resolve().parents[1]

FIRST_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    from barrierflow.broker import RedisStore
    from examples.approval_flow import approval_flow

    async def main(url, prefix):
        store = RedisStore.from_url(url, prefix=prefix)
        wf = approval_flow().build(instance_id="post-7", store=store)
        result = await wf.run("launch notes")
        print(json.dumps({"status": result.status.value, "pending": sorted(result.pending_requests)}))
        await store.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_process_one_waits_on_a_request_and_exits_process_two_answers_it(
    redis_url: str, real_redis_prefix: str
) -> None:
    first = subprocess.run(
        [sys.executable, "-c", FIRST_PROCESS, redis_url, real_redis_prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["status"] == RunState.IDLE_WITH_PENDING_REQUESTS.value
    [request_id] = report["pending"]

    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix)
    try:
        wf = approval_flow().build(instance_id="post-7", store=store)  # a new handle: state comes from Redis
        assert set(await wf.pending_requests()) == {request_id}
        result = await wf.run(responses={request_id: True})
        assert result.status == RunState.IDLE
        [published] = result.outputs
        assert published.published and published.topic == "launch notes"
        lineage = await store.list_checkpoints("post-7")
        assert {cp.run_id for cp in lineage} >= {result.run_id}
        assert len({cp.run_id for cp in lineage}) == 2  # both processes' runs wrote this instance's lineage
    finally:
        await store.aclose()
