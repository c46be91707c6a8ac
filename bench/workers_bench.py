"""Benchmark of distributed mode: CeleryDispatcher supersteps against plain Celery, side by side, as JSON lines.

    python bench/workers_bench.py [--redis-url URL] [--runs N]

It starts two worker processes of its own (``celery -A barrierflow.workers.app worker -P prefork -c 1``) on a fresh queue
(worker 1 also consumes a second queue, used for the one-worker comparison), on the local Redis, and removes
its queues and keys at the end. Each figure is a median over several runs, measured in this process:

(a) ``width100``: one superstep of 100 trivial handlers (100 executors, one delivery each), from
    ``superstep_started`` to ``superstep_completed`` (dispatch, workers, collection and the checkpoint write),
    against a raw Celery ``group`` of 100 no-op tasks collected with ``GroupResult.get()`` (Redis result
    backend, native join). Target: ratio <= 0.25.
(b) ``deliveries``: a superstep of 10,000 trivial deliveries (100 messages fanned out to 100 executors),
    deliveries per second, against a ``group`` of 100 raw tasks carrying 100 messages each. Target >= 0.8.
(c) ``cpu``: 100 handlers of about 10 ms of pure Python each, one superstep, on 2 workers against 1.
    Target speedup >= 1.7 (on 2 cores, where the coordinator and Redis share them with the workers). As a
    control, ``bare_processes_speedup`` is the same work in two bare processes against one (no Celery, no
    Redis): the most any dispatcher could get from this machine at that moment.

The workers import this file as module ``workers_bench`` (``bench/`` goes on their ``PYTHONPATH``), which is
why the raw tasks and the workflows below are defined at module level and only ``main`` runs anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from barrierflow.engine import (
    EventType,
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    register_workflow,
)
from barrierflow.workers.app import app
from barrierflow.workers.process import worker_command

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 100


# -- raw Celery baselines ----------------------------------------------------------------------------------


@app.task(name="bench.noop", ignore_result=False)
def raw_noop() -> None:
    return None


@app.task(name="bench.batch", ignore_result=False)
def raw_batch(messages: list[int]) -> int:
    total = 0
    for message in messages:  # the same trivial work per message as a trivial handler
        total += message
    return total


# -- workflows -----------------------------------------------------------------------------------------------


@executor(id="kick")
async def kick(job: dict, ctx: WorkflowContext) -> None:
    for i in range(job["messages"]):
        await ctx.send_message({"i": i, "spin": job["spin"]})


class Sink(Executor):
    @handler
    def on_message(self, message: dict, ctx: WorkflowContext) -> None:
        spin = message["spin"]
        if spin:
            burn(spin)


def burn(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


@register_workflow
def bench_wide() -> WorkflowBuilder:
    sinks = [Sink(id=f"sink{i}") for i in range(WIDTH)]
    return WorkflowBuilder(name="bench_wide", start_executor=kick).add_fan_out_edges(kick, sinks)


# -- measuring -----------------------------------------------------------------------------------------------


async def superstep_seconds(wf: Any, job: dict) -> float:
    """Wall time of superstep 2 (the wide one), from its start event to its completion event."""
    started = completed = 0.0
    async for event in wf.stream(job):
        if event.superstep == 2 and event.type == EventType.SUPERSTEP_STARTED:
            started = time.perf_counter()
        elif event.superstep == 2 and event.type == EventType.SUPERSTEP_COMPLETED:
            completed = time.perf_counter()
    return completed - started


def raw_group_seconds(signatures: list[Any], queue: str) -> float:
    from celery import group

    start = time.perf_counter()
    result = group(signatures).apply_async(queue=queue)
    result.get(timeout=120)
    elapsed = time.perf_counter() - start
    result.forget()
    return elapsed


def _bare_process(iterations: int, count: int, ready: Any, go: Any) -> None:
    ready.release()
    go.wait()
    for _ in range(count):
        burn(iterations)


def bare_process_speedup(iterations: int) -> float:
    """The machine's own ceiling for (c): the same 100 burns in 2 bare processes against 1, no Celery.

    Processes are spawned (not forked from this process, whose Celery connections a fork would share) and
    timed from a common start signal, so their start-up is not counted.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    times = []
    for processes in (1, 2):
        ready, go = context.Semaphore(0), context.Event()
        procs = [
            context.Process(target=_bare_process, args=(iterations, WIDTH // processes, ready, go))
            for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire()
        start = time.perf_counter()
        go.set()
        for proc in procs:
            proc.join()
        times.append(time.perf_counter() - start)
    return times[0] / times[1]


def calibrate(target: float = 0.010) -> int:
    iterations = 20_000
    while True:
        start = time.perf_counter()
        burn(iterations)
        took = time.perf_counter() - start
        if took > 0.002:
            return int(iterations * target / took)
        iterations *= 4


class Bench:
    def __init__(self, redis_url: str, runs: int) -> None:
        from barrierflow.broker import RedisStore

        self.redis_url = redis_url
        self.runs = runs
        self.queue = f"bfbench-{uuid.uuid4().hex[:8]}"
        self.single = f"{self.queue}-one"
        self.prefix = self.queue
        self.store = RedisStore.from_url(redis_url, prefix=self.prefix)
        self.procs: list[subprocess.Popen] = []

    # workers

    def start_workers(self) -> None:
        env = dict(os.environ)
        env.update(
            BARRIERFLOW_REDIS_URL=self.redis_url,
            BARRIERFLOW_BROKER_URL=self.redis_url,
            BARRIERFLOW_RESULT_BACKEND=self.redis_url,
            BARRIERFLOW_IMPORTS="workers_bench",
            BARRIERFLOW_PREFIX=app.conf.barrierflow_prefix,  # where they register, and the dispatcher looks
            PYTHONPATH=os.pathsep.join([str(ROOT / "bench"), str(ROOT), env.get("PYTHONPATH", "")]),
        )
        names = []
        for n, queues in ((1, f"{self.queue},{self.single}"), (2, self.queue)):
            name = f"{self.queue}-w{n}"
            names.append(f"{name}@{socket.gethostname()}")
            self.procs.append(
                subprocess.Popen(
                    worker_command(queues, name),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        self.wait_registered(set(names))

    def wait_registered(self, nodes: set[str]) -> None:
        """Until the workers are in the worker registry on the bench queue (a ping would leave reply keys)."""
        import redis

        from barrierflow.broker.worker_registry import live_workers

        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 60
        while nodes and time.monotonic() < deadline:
            nodes -= {w.node for w in live_workers(client, app.conf.barrierflow_prefix, self.queue)}
            time.sleep(0.05)
        client.close()
        if nodes:
            raise SystemExit(f"workers {sorted(nodes)} did not start")

    def stop(self) -> None:
        import redis

        for proc in self.procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(20)
        client = redis.Redis.from_url(self.redis_url)
        for pattern in (f"{self.queue}*", f"_kombu.binding*.{self.queue}*", f"{self.prefix}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)

    # runs

    def workflow(self, queue: str) -> Any:
        from barrierflow.workers import CeleryDispatcher

        dispatcher = CeleryDispatcher(app, store=self.store, queue=queue)
        return bench_wide().build(
            instance_id=f"{self.prefix}-{uuid.uuid4().hex[:8]}", store=self.store, dispatcher=dispatcher
        )

    async def ours(self, job: dict, queue: str, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            wf = self.workflow(queue)
            times.append(await superstep_seconds(wf, job))
            await wf.dispatcher.aclose()
        return times

    async def run(self) -> list[dict[str, Any]]:
        runs, lines = self.runs, []
        trivial = {"messages": 1, "spin": 0}
        await self.ours(trivial, self.queue, 3)  # warm up: graphs built in the workers, slots discovered
        raw_group_seconds([raw_noop.s() for _ in range(WIDTH)], self.queue)

        ours = statistics.median(await self.ours(trivial, self.queue, runs))
        raw = statistics.median(
            raw_group_seconds([raw_noop.s() for _ in range(WIDTH)], self.queue) for _ in range(runs)
        )
        lines.append(
            {
                "bench": "width100_superstep",
                "barrierflow_ms": round(ours * 1e3, 2),
                "raw_celery_group_ms": round(raw * 1e3, 2),
                "ratio": round(ours / raw, 3),
                "target": "ratio <= 0.25",
                "ok": ours / raw <= 0.25,
            }
        )

        many = {"messages": WIDTH, "spin": 0}
        deliveries = WIDTH * WIDTH
        ours = statistics.median(await self.ours(many, self.queue, max(3, runs // 4)))
        raw = statistics.median(
            raw_group_seconds([raw_batch.s(list(range(WIDTH))) for _ in range(WIDTH)], self.queue)
            for _ in range(max(3, runs // 4))
        )
        lines.append(
            {
                "bench": "deliveries_10000",
                "barrierflow_per_s": round(deliveries / ours),
                "raw_celery_100x100_per_s": round(deliveries / raw),
                "ratio": round(raw / ours, 3),
                "barrierflow_ms": round(ours * 1e3, 1),
                "raw_ms": round(raw * 1e3, 1),
                "target": "ratio >= 0.8",
                "ok": raw / ours >= 0.8,
            }
        )

        cpu = {"messages": 1, "spin": calibrate()}
        await self.ours(cpu, self.single, 1)
        ones, twos, bare = [], [], []
        for _ in range(max(3, runs // 4)):  # interleaved, so a load change elsewhere hits both alike
            ones += await self.ours(cpu, self.single, 1)
            twos += await self.ours(cpu, self.queue, 1)
            bare.append(bare_process_speedup(cpu["spin"]))
        one, two = statistics.median(ones), statistics.median(twos)
        lines.append(
            {
                "bench": "cpu_10ms_x100",
                "one_worker_ms": round(one * 1e3, 1),
                "two_workers_ms": round(two * 1e3, 1),
                "speedup": round(one / two, 3),
                "cores": os.cpu_count(),
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "bare_processes_speedup": round(statistics.median(bare), 3),
                "target": "speedup >= 1.7",
                "ok": one / two >= 1.7,
            }
        )
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("BARRIERFLOW_REDIS_URL", "redis://localhost:6379/0")
    )
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    app.conf.update(
        broker_url=args.redis_url, result_backend=args.redis_url, barrierflow_redis_url=args.redis_url
    )
    bench = Bench(args.redis_url, args.runs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the workers and delete the keys
    bench.start_workers()
    try:
        for line in asyncio.run(bench.run()):
            print(json.dumps(line), flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workers_bench  # the definitions under the name the workers know them by

    workers_bench.main()
