"""Ctrl-C during a sync handler: the command exits 130 at once and the instance is at its last checkpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.cli.conftest import ROOT, barrierflow_argv


def test_ctrl_c_during_a_sync_handler_exits_130_promptly_at_the_last_checkpoint(
    redis_url: str, real_redis_prefix: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [
            *barrierflow_argv(),
            "run",
            "tests.cli.interruptible:interruptible",
            "--input",
            "60",
            "--redis",
            redis_url,
            "--prefix",
            real_redis_prefix,
            "--instance",
            "ctrl-c",
        ],
        cwd=ROOT,
        env={**os.environ, "BFTEST_STARTED": str(started)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)  # the handler would block for 60 s: this is "promptly"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted: the instance's state is its latest checkpoint" in stderr
    assert "Traceback" not in stderr

    async def stored() -> tuple[bool, list[int], list[float]]:
        from barrierflow.broker import RedisStore

        store = RedisStore.from_url(redis_url, prefix=real_redis_prefix)
        try:
            held = (await store.describe("ctrl-c")).held
            checkpoints = await store.list_checkpoints("ctrl-c")
        finally:
            await store.aclose()
        return held, [cp.superstep for cp in checkpoints], [d.message for d in checkpoints[0].messages]

    held, supersteps, queued = asyncio.run(stored())
    assert not held  # the lease was released on the way out
    assert supersteps == [0]  # the last checkpoint: the run's input, still queued
    assert queued == [60]
