"""Benchmark of the run queue service (issue 10), each figure beside its baseline, as JSON lines.

    python bench/service_bench.py [--redis-url URL] [--jobs 2000] [--only a,b,c,d,e]

Without ``--redis-url`` it starts a private ``redis-server`` (so other users of a shared Redis neither slow it
down nor skew the memory figure) and stops it at the end. Every process it starts (coordinators with
``barrierflow coordinator``, Celery workers with ``celery -A barrierflow.workers.app worker -P prefork -c 1``)
imports this file as module ``service_bench`` (``bench/`` on their ``PYTHONPATH``).

(a) ``jobs_local``: 2,000 jobs of a 3-superstep workflow (start -> fan-out to 4 -> fan-in), submitted at once,
    2 coordinator processes running the handlers themselves, jobs/s until the last completion; against raw
    Celery no-op tasks/s with 2 worker processes, send-all then get-all. Target >= 1.0x.
(b) ``jobs_celery``: the same jobs, 1 coordinator + 2 Celery worker processes; against a raw Celery canvas of
    the same shape per job, ``chain(start.s(), chord(group(4 x work.s()), join.s()))``. Target >= 2x. Beside
    it, the same jobs with packing off (``BARRIERFLOW_PACK_SIZE=1``: one Celery task per superstep per job).
(c) ``latency_local``: one job at a time, submit -> ``wait()`` returns, 1 coordinator process. p50 <= 5 ms.
(f) ``latency_celery``: the same in Celery mode (1 coordinator, 2 workers), packing on and off: a lone
    run's supersteps must not wait for company.
(d) ``failover``: 200 jobs in flight on 2 coordinators, one SIGKILLed: seconds until all complete (each
    once). Target <= lock_ttl + 5 s.
(e) ``footprint``: 10,000 instances each idle, waiting on one request: Redis bytes per instance (INFO
    memory, used_memory delta). Target <= 4 KB.

Completions are counted from the queue's pub/sub notices (one subscription), so measuring costs the
coordinators nothing; the results are checked afterwards, outside the timed window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from barrierflow.engine import (
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
FAN = 4


# -- the workflows ---------------------------------------------------------------------------------------------


@executor(id="begin")
async def begin(n: int, ctx: WorkflowContext) -> None:
    await ctx.send_message(n)


class Part(Executor):
    @handler
    async def on_n(self, n: int, ctx: WorkflowContext) -> None:
        await ctx.send_message(n * 2)


class Total(Executor):
    @handler
    async def on_parts(self, parts: list[int], ctx: WorkflowContext) -> None:
        await ctx.yield_output(sum(parts))


@register_workflow
def svc_fan() -> WorkflowBuilder:
    parts = [Part(id=f"part{i}") for i in range(FAN)]
    total = Total(id="total")
    return (
        WorkflowBuilder(name="svc_fan", start_executor=begin)
        .add_fan_out_edges(begin, parts)
        .add_fan_in_edges(parts, total)
    )


class Ask(Executor):
    @handler
    async def on_n(self, n: int, ctx: WorkflowContext) -> None:
        await ctx.request_info({"job": n, "question": "approve?"}, bool)

    @handler
    async def on_answer(self, answer: bool, ctx: WorkflowContext) -> None:  # never reached here
        await ctx.yield_output(answer)


@register_workflow
def svc_ask() -> WorkflowBuilder:
    return WorkflowBuilder(name="svc_ask", start_executor=Ask(id="ask"))


class Tick(Executor):
    @handler
    async def on_step(self, step: list, ctx: WorkflowContext) -> None:
        n, steps, delay = step
        await asyncio.sleep(delay)
        if n < steps:
            await ctx.send_message([n + 1, steps, delay])
        else:
            await ctx.yield_output(n)


@register_workflow
def svc_slow() -> WorkflowBuilder:
    tick = Tick(id="tick")
    return WorkflowBuilder(name="svc_slow", start_executor=tick).add_edge(tick, tick)


# -- raw Celery baselines ------------------------------------------------------------------------------------


@app.task(name="svc.noop", ignore_result=False)
def raw_noop() -> None:
    return None


@app.task(name="svc.begin", ignore_result=False)
def raw_begin(n: int) -> int:
    return n


@app.task(name="svc.part", ignore_result=False)
def raw_part(n: int) -> int:
    return n * 2


@app.task(name="svc.total", ignore_result=False)
def raw_total(parts: list[int]) -> int:
    return sum(parts)


# -- processes -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_for(url: str | None) -> Iterator[str]:
    """``url``, or a private ``redis-server`` without persistence started for the benchmark (stopped after)."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH: pass --redis-url")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


class Processes:
    """Everything the benchmark starts, each in its own process group, stopped at the end."""

    def __init__(self, redis_url: str, prefix: str, queue: str, logs: Path) -> None:
        self.redis_url, self.prefix, self.queue, self.logs = redis_url, prefix, queue, logs
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BARRIERFLOW_REDIS_URL=self.redis_url,
            BARRIERFLOW_BROKER_URL=self.redis_url,
            BARRIERFLOW_RESULT_BACKEND=self.redis_url,
            BARRIERFLOW_QUEUE=self.queue,
            BARRIERFLOW_IMPORTS="service_bench",
            BARRIERFLOW_WORKER_SLOTS="2",
            PYTHONPATH=os.pathsep.join([str(ROOT / "bench"), str(ROOT), env.get("PYTHONPATH", "")]),
        )
        return env

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the process
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env(), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def coordinator(self, name: str, *options: str, pack_size: int | None = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "barrierflow.cli.main", "coordinator", "--import", "service_bench"]
        argv += ["--redis", self.redis_url, "--prefix", self.prefix, "--log-level", "WARNING", *options]
        env = {"BARRIERFLOW_PACK_SIZE": str(pack_size)} if pack_size is not None else {}
        return self.start(name, argv, **env)

    def workers(self, count: int) -> list[str]:
        names = []
        for n in range(count):
            name = f"{self.queue}-w{n}"
            names.append(f"{name}@{socket.gethostname()}")
            self.start(name, worker_command(self.queue, name))
        waiting, deadline = set(names), time.monotonic() + 60
        while waiting and time.monotonic() < deadline:
            for reply in app.control.ping(destination=sorted(waiting), timeout=0.3) or []:
                waiting -= set(reply)
        if waiting:
            raise SystemExit(f"workers {sorted(waiting)} did not start")
        return names

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


# -- measuring -------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, redis_url: str, jobs: int, logs: Path) -> None:
        from barrierflow.broker import RedisStore, RunQueue

        self.redis_url, self.jobs = redis_url, jobs
        self.prefix = f"bfsvc-{uuid.uuid4().hex[:8]}"
        self.queue = self.prefix
        self.store = RedisStore.from_url(redis_url, prefix=self.prefix, lock_ttl=5.0)
        self.runs = RunQueue(self.store)
        self.procs = Processes(redis_url, self.prefix, self.queue, logs)
        app.conf.task_default_queue = self.queue  # every task of a canvas goes where the workers listen

    async def until_ended(self, count: int, submit: Any) -> tuple[float, list[Any]]:
        """Run ``submit()`` and time it until ``count`` runs have ended (counting the queue's notices)."""
        pubsub = self.store.client.pubsub()
        await pubsub.subscribe(self.runs.ended_channel)
        while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
            pass
        seen = 0
        start = time.perf_counter()
        tickets = await submit()
        while seen < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                seen += 1
        elapsed = time.perf_counter() - start
        await pubsub.aclose()
        return elapsed, tickets

    async def submit_all(self, workflow: str, inputs: list[Any]) -> list[Any]:
        return await asyncio.gather(*(self.runs.submit(workflow, message) for message in inputs))

    async def check(self, tickets: list[Any], expected: list[Any]) -> int:
        """How many runs ended ``completed`` with the expected outputs (read after the timed window)."""
        good = 0
        for start in range(0, len(tickets), 50):  # 50 at a time: redis-py's pool holds 100 connections
            infos = await self.infos(tickets[start : start + 50])
            good += sum(
                1
                for info, outputs in zip(infos, expected[start : start + 50], strict=True)
                if info.state == "completed" and info.outputs == outputs
            )
        return good

    async def infos(self, tickets: list[Any]) -> list[Any]:
        found = []
        for start in range(0, len(tickets), 50):
            found += await asyncio.gather(*(self.runs.get(t.run_id) for t in tickets[start : start + 50]))
        return found

    async def coordinators_ready(self, count: int) -> None:
        """Wait until ``count`` coordinators read the queue (a first one alone would take every job).

        Counted as connections blocked in ``XREADGROUP`` (Redis 7.0 creates a consumer only when it is given
        an entry, so the group's consumer list says nothing yet).
        """
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            clients = await self.store.client.client_list()
            if sum(1 for c in clients if c.get("cmd") == "xreadgroup") >= count:
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"{count} coordinators did not start (see the logs)")

    async def warm(self, coordinators: int) -> None:
        await self.coordinators_ready(coordinators)
        tickets = await self.submit_all("svc_fan", list(range(10 * coordinators)))
        for ticket in tickets:
            await self.runs.wait(ticket.run_id, timeout=60)

    # (a) and (b)

    async def jobs_mode(self, celery: bool, pack_size: int | None = None) -> dict[str, Any]:
        inputs = list(range(self.jobs))
        if celery:
            self.procs.coordinator("coord", "--celery", "--concurrency", "256", pack_size=pack_size)
        else:
            for n in (1, 2):
                self.procs.coordinator(f"coord{n}", "--concurrency", "512")
        await self.warm(1 if celery else 2)
        ours, tickets = await self.until_ended(self.jobs, lambda: self.submit_all("svc_fan", inputs))
        good = await self.check(tickets, [[2 * n * FAN] for n in inputs])
        for name in list(self.procs.procs):
            if name.startswith("coord"):
                self.procs.stop(name)
        return {"seconds": ours, "per_s": self.jobs / ours, "completed_ok": good}

    def raw_noops(self) -> float:
        raw_noop.apply_async(queue=self.queue).get(timeout=60)
        start = time.perf_counter()
        results = [raw_noop.apply_async(queue=self.queue) for _ in range(self.jobs)]
        for result in results:
            result.get(timeout=300)
        elapsed = time.perf_counter() - start
        for result in results:
            result.forget()
        return elapsed

    def raw_canvas(self) -> float:
        from celery import chain, chord, group

        def job(n: int) -> Any:
            return chain(raw_begin.s(n), chord(group(raw_part.s() for _ in range(FAN)), raw_total.s()))

        # json: kombu's msgpack cannot carry a chain holding a chord ("unpack(b) received extra data")
        job(0).apply_async(queue=self.queue, serializer="json").get(timeout=60)
        start = time.perf_counter()
        results = [job(n).apply_async(queue=self.queue, serializer="json") for n in range(self.jobs)]
        for result in results:
            result.get(timeout=600)
        return time.perf_counter() - start

    # (c)

    async def latency(self, samples: int, *options: str, pack_size: int | None = None) -> dict[str, Any]:
        self.procs.coordinator("coord", "--concurrency", "64", *options, pack_size=pack_size)
        await self.warm(1)
        times = []
        for n in range(samples):
            start = time.perf_counter()
            ticket = await self.runs.submit("svc_fan", n)
            await self.runs.wait(ticket.run_id, timeout=30)
            times.append(time.perf_counter() - start)
        self.procs.stop("coord")
        times.sort()
        return {
            "p50_ms": round(statistics.median(times) * 1e3, 2),
            "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1e3, 2),
            "mean_ms": round(statistics.fmean(times) * 1e3, 2),
        }

    # (d)

    async def failover(self, jobs: int, lock_ttl: float) -> dict[str, Any]:
        options = ("--concurrency", "256", "--lock-ttl", str(lock_ttl))
        victim = self.procs.coordinator("victim", *options)
        self.procs.coordinator("survivor", *options)
        steps, delay = 12, 0.25
        await self.coordinators_ready(2)
        tickets = await self.submit_all("svc_slow", [[1, steps, delay]] * jobs)
        while True:  # both coordinators busy, a few supersteps in
            infos = await self.infos(tickets)
            running = [i for i in infos if i.state == "running"]
            if len(running) == jobs and len({i.coordinator for i in running}) == 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(4 * delay)
        on_victim = sum(1 for i in running if i.coordinator and f":{victim.pid}:" in i.coordinator)
        killed = time.perf_counter()
        os.killpg(victim.pid, signal.SIGKILL)
        for ticket in tickets:
            await self.runs.wait(ticket.run_id, timeout=120)
        took = time.perf_counter() - killed
        infos = await self.infos(tickets)
        once = 0
        for ticket in tickets:  # exactly one end and one output per run, in its instance's stream
            kinds = [e.type async for e in self.runs.events(ticket.instance_id, follow=False)]
            once += kinds.count("run_ended") == 1 and kinds.count("output") == 1
        self.procs.stop_all()
        return {
            "seconds_after_kill": round(took, 2),
            "runs_on_killed_coordinator": on_victim,
            "taken_over": sum(1 for i in infos if i.attempts == 2),
            "completed": sum(1 for i in infos if i.state == "completed" and i.outputs == [steps]),
            "ended_once": once,
            "lock_ttl": lock_ttl,
        }

    # (e)

    async def footprint(self, instances: int) -> dict[str, Any]:
        client = self.store.client
        before = (await client.info("memory"))["used_memory"]
        for n in (1, 2):  # a short lease, so the epoch keys' TTL (10 leases) ends within the bench
            self.procs.coordinator(f"coord{n}", "--concurrency", "512", "--lock-ttl", "2")
        await self.coordinators_ready(2)
        elapsed, tickets = await self.until_ended(
            instances, lambda: self.submit_all("svc_ask", list(range(instances)))
        )
        for name in list(self.procs.procs):
            self.procs.stop(name)
        await asyncio.sleep(0.5)
        after = (await client.info("memory"))["used_memory"]
        sample = await self.runs.get(tickets[0].run_id)
        keys = [k async for k in client.scan_iter(match=f"{self.prefix}:{{{tickets[0].instance_id}}}:*")]
        usage = sum([await client.memory_usage(key, samples=0) for key in keys])  # the keys alone
        await asyncio.sleep(21)  # at rest: the epoch keys have expired (10 x lock_ttl after the last write)
        rest = (await client.info("memory"))["used_memory"]
        return {
            "instances": instances,
            "bytes_per_instance": round((after - before) / instances),
            "bytes_per_instance_at_rest": round((rest - before) / instances),
            "memory_usage_of_its_keys": usage,
            "keys_per_instance": len(keys),
            "status": sample.status.value if sample.status else None,
            "seconds_to_create": round(elapsed, 2),
        }

    async def cleanup(self) -> None:
        client = self.store.client
        for pattern in (f"{self.prefix}*", f"_kombu.binding*.{self.queue}*", "celery-task-meta-*"):
            batch = []
            async for key in client.scan_iter(match=pattern, count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.delete(*batch)
                    batch = []
            if batch:
                await client.delete(*batch)
        await self.runs.aclose()
        await self.store.aclose()


def line(bench: str, **fields: Any) -> None:
    print(json.dumps({"bench": bench, **fields, "loadavg_1min": round(os.getloadavg()[0], 2)}), flush=True)


async def run(args: argparse.Namespace, logs: Path) -> None:
    only = set(args.only.split(","))
    bench = Bench(args.redis_url, args.jobs, logs)
    try:
        if {"a", "b", "f"} & only:
            bench.procs.workers(2)
        for key, celery, baseline, name, target in (
            ("a", False, bench.raw_noops, "raw_celery_noops_per_s", 1.0),
            ("b", True, bench.raw_canvas, "raw_celery_canvas_jobs_per_s", 2.0),
        ):
            if key not in only:
                continue
            ours = await bench.jobs_mode(celery=celery)
            if args.without_baselines:  # barrierflow's own figure only (comparing two checkouts)
                line(
                    "jobs_celery" if celery else "jobs_local",
                    jobs=args.jobs,
                    barrierflow_jobs_per_s=round(ours["per_s"]),
                    completed_ok=ours["completed_ok"],
                )
                continue
            unpacked = {}
            if celery:  # the same with packing off: what packing is worth, in the same run
                off = await bench.jobs_mode(celery=True, pack_size=1)
                unpacked = {
                    "unpacked_jobs_per_s": round(off["per_s"]),
                    "unpacked_completed_ok": off["completed_ok"],
                }
            raw = args.jobs / await asyncio.to_thread(baseline)  # jobs/s of the baseline, the same jobs
            ratio = ours["per_s"] / raw
            if unpacked:
                unpacked["unpacked_ratio"] = round(unpacked["unpacked_jobs_per_s"] / raw, 3)
            line(
                "jobs_celery" if celery else "jobs_local",
                jobs=args.jobs,
                barrierflow_jobs_per_s=round(ours["per_s"]),
                **{name: round(raw)},
                ratio=round(ratio, 3),
                **unpacked,
                completed_ok=ours["completed_ok"],
                target=f"ratio >= {target}",
                ok=ratio >= target and ours["completed_ok"] == args.jobs,
            )
        if "c" in only:
            latency = await bench.latency(args.samples)
            line(
                "latency_local",
                samples=args.samples,
                **latency,
                target="p50 <= 5 ms",
                ok=latency["p50_ms"] <= 5,
            )
        if "f" in only:
            packed = await bench.latency(args.samples, "--celery")
            alone = await bench.latency(args.samples, "--celery", pack_size=1)
            line(
                "latency_celery",
                samples=args.samples,
                **packed,
                unpacked=alone,
                target="packing costs a lone run nothing (p50 within noise of unpacked)",
            )
        if "d" in only:
            failover = await bench.failover(200, args.lock_ttl)
            line(
                "failover",
                jobs=200,
                **failover,
                target=f"all complete once, <= lock_ttl + 5 s = {args.lock_ttl + 5:g} s",
                ok=failover["completed"] == failover["ended_once"] == 200
                and failover["seconds_after_kill"] <= args.lock_ttl + 5,
            )
        if "e" in only:
            footprint = await bench.footprint(args.instances)
            line(
                "footprint",
                **footprint,
                target="<= 4096 bytes per instance",
                ok=footprint["bytes_per_instance"] <= 4096
                and footprint["bytes_per_instance_at_rest"] <= 4096,
            )
    finally:
        bench.procs.stop_all()
        await bench.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=None, help="default: a private redis-server started for the run"
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--lock-ttl", type=float, default=5.0)
    parser.add_argument("--only", default="a,b,c,d,e")
    parser.add_argument(
        "--without-baselines",
        action="store_true",
        help="skip the raw Celery figures of (a) and (b): barrierflow's own only (bench/side_by_side.py)",
    )
    parser.add_argument(
        "--logs", default=None, help="directory for the processes' logs (default: a temp dir)"
    )
    args = parser.parse_args()
    with redis_for(args.redis_url) as args.redis_url:
        _main(args)


def _main(args: argparse.Namespace) -> None:
    app.conf.update(
        broker_url=args.redis_url, result_backend=args.redis_url, barrierflow_redis_url=args.redis_url
    )
    logs = Path(args.logs) if args.logs else Path(__import__("tempfile").mkdtemp(prefix="bfsvc-"))
    logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the processes and delete the keys
    asyncio.run(run(args, logs))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import service_bench  # the definitions under the name the other processes know them by

    service_bench.main()
