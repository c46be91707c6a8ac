"""The command line of one worker process, in one place (tests, benchmarks and tools start workers with it)."""

from __future__ import annotations

import sys


def worker_command(queues: str, name: str, *, concurrency: int = 1, loglevel: str = "warning") -> list[str]:
    """``python -m celery -A barrierflow.workers.app worker`` for ``queues`` (comma-separated), node ``name@<host>``.

    Prefork pool (handlers may be CPU-bound); no heartbeat, gossip or mingle: barrierflow needs none of them
    and they cost start-up time and broker traffic.
    """
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "barrierflow.workers.app",
        "worker",
        "-P",
        "prefork",
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "-n",
        f"{name}@%h",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-l",
        loglevel,
    ]
