"""Benchmark of the HTTP API (issue 11), each figure beside its baseline, as JSON lines.

    python bench/server_bench.py [--redis-url URL] [--samples 400] [--clients 200] [--only submit_wait,fanout]

Without ``--redis-url`` it starts a private ``redis-server`` and stops it at the end. It starts one
``barrierflow coordinator`` (handlers in process: local mode) and one ``barrierflow serve`` (uvicorn, with
uvloop and httptools when installed), both importing ``service_bench`` (its ``svc_fan`` workflow: start ->
fan-out to 4 -> fan-in, three supersteps) and this file's ``srv_ticks``.

(i) ``submit_wait``: one job at a time, submit -> result, through HTTP (``POST /api/workflows/svc_fan/runs``
    with ``"wait"``, one keep-alive connection) against ``RunQueue`` directly (``submit_and_wait``, the call
    the server makes), samples interleaved so both see the same machine. Target: HTTP p50 <=
    1.3x direct. The HTTP client is a minimal HTTP/1.1 one (what a lean client costs); httpx's figure, a
    heavier Python client, is reported beside it.
(ii) ``sse_fanout``: ``--clients`` SSE clients follow one instance (``GET /api/instances/{id}/events``) while a
    run of ``srv_ticks`` emits its events; every client must get every event of the instance, in order (the
    ids ``RunQueue.events`` reads afterwards). Reports the time from submission until the last client saw the
    run end, and the delivery lag of the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_bench import Processes, free_port, line, redis_for

from barrierflow.engine import Executor, WorkflowBuilder, WorkflowContext, handler, register_workflow


class Ticks(Executor):
    """``[i, n]``: n supersteps, one output each, no pause (a stream of events to fan out)."""

    @handler
    async def on_tick(self, tick: list, ctx: WorkflowContext) -> None:
        i, n = tick
        await ctx.yield_output(i)
        if i + 1 < n:
            await ctx.send_message([i + 1, n])


@register_workflow
def srv_ticks() -> WorkflowBuilder:
    ticks = Ticks(id="ticks")
    return WorkflowBuilder(name="srv_ticks", start_executor=ticks, max_supersteps=10_000).add_edge(
        ticks, ticks
    )


# -- a minimal HTTP/1.1 keep-alive client ------------------------------------------------------------------------


class Connection:
    """One keep-alive connection: ``request`` sends and reads one whole answer (Content-Length bodies)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        assert self.reader is not None
        status_line = await self.reader.readuntil(b"\r\n")
        headers = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(headers.split("content-length:")[1].split("\r\n")[0])
        return int(status_line.split()[1]), json.loads(await self.reader.readexactly(length))

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


# -- measuring -----------------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


class Bench:
    def __init__(self, redis_url: str, logs: Path) -> None:
        from barrierflow.broker import RedisStore, RunQueue

        self.redis_url = redis_url
        self.prefix = f"bfsrv-{os.urandom(4).hex()}"
        self.store = RedisStore.from_url(redis_url, prefix=self.prefix)
        self.runs = RunQueue(self.store)
        self.procs = Processes(redis_url, self.prefix, self.prefix, logs)
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.procs.coordinator("coord", "--concurrency", "64", "--import", "server_bench")
        argv = [sys.executable, "-m", "barrierflow.cli.main", "serve", "--port", str(self.port)]
        argv += ["--redis", self.redis_url, "--prefix", self.prefix, "--log-level", "WARNING"]
        argv += ["--import", "service_bench", "--import", "server_bench"]
        self.procs.start("serve", argv)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.api}/api/health", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("barrierflow serve did not start (see its log)") from None
                time.sleep(0.1)

    async def submit_wait(self, samples: int) -> dict[str, Any]:
        import httpx

        conn = Connection("127.0.0.1", self.port)
        path = "/api/workflows/svc_fan/runs"

        async def direct(n: int) -> None:
            _, info = await self.runs.submit_and_wait("svc_fan", n, timeout=30)
            assert info is not None and info.state == "completed" and info.outputs == [2 * n * 4], info

        async def two_calls(n: int) -> None:  # what submit_and_wait saves: a read before the end's notice
            ticket = await self.runs.submit("svc_fan", n)
            info = await self.runs.wait_ended(ticket.run_id, timeout=30)
            assert info.outputs == [2 * n * 4], info

        async def http(n: int) -> None:
            status, record = await conn.request("POST", path, {"input": n, "wait": 30})
            assert status == 200 and record["outputs"] == [2 * n * 4], record

        async with httpx.AsyncClient(base_url=self.api, timeout=30) as client:

            async def via_httpx(n: int) -> None:
                response = await client.post(path, json={"input": n, "wait": 30})
                assert response.status_code == 200 and response.json()["outputs"] == [2 * n * 4]

            ways = {"direct": direct, "direct_two_calls": two_calls, "http": http, "httpx": via_httpx}
            times: dict[str, list[float]] = {name: [] for name in ways}
            for n in range(30):  # warm: connections, subscriptions, code paths
                for way in ways.values():
                    await way(n)
            cpu, coordinator_cpu = self.cpu_seconds("serve"), self.cpu_seconds("coord")
            for n in range(samples):
                order = list(ways.items())
                if n % 2:
                    order.reverse()  # neither way always goes first
                for name, way in order:
                    start = time.perf_counter()
                    await way(n)
                    times[name].append(time.perf_counter() - start)
            cpu = self.cpu_seconds("serve") - cpu
            coordinator_cpu = self.cpu_seconds("coord") - coordinator_cpu
        await conn.aclose()
        p50 = {name: statistics.median(values) for name, values in times.items()}
        return {
            "samples": samples,
            "direct_p50_ms": ms(p50["direct"]),
            "http_p50_ms": ms(p50["http"]),
            "httpx_p50_ms": ms(p50["httpx"]),
            "direct_submit_then_wait_p50_ms": ms(p50["direct_two_calls"]),
            "direct_p99_ms": ms(percentile(times["direct"], 0.99)),
            "http_p99_ms": ms(percentile(times["http"], 0.99)),
            "server_cpu_ms_per_http_request": round(cpu * 1e3 / (2 * samples), 3),
            "coordinator_cpu_ms_per_job": round(coordinator_cpu * 1e3 / (4 * samples), 3),
            "http_over_direct_p50": round(p50["http"] / p50["direct"], 3),
            "httpx_over_direct_p50": round(p50["httpx"] / p50["direct"], 3),
        }

    async def sse_fanout(self, clients: int, ticks: int) -> dict[str, Any]:
        import httpx

        conn = Connection("127.0.0.1", self.port)
        status, first = await conn.request(
            "POST", "/api/workflows/srv_ticks/runs", {"input": [0, 1], "wait": 30}
        )
        assert status == 200, first
        instance = first["instance_id"]
        seen: list[list[str]] = [[] for _ in range(clients)]
        ended_at: list[float] = [0.0] * clients
        ready = asyncio.Event()
        connected = 0
        limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)

        async with httpx.AsyncClient(base_url=self.api, timeout=60, limits=limits) as client:

            async def follow(k: int, run_id: asyncio.Future[str]) -> None:
                nonlocal connected
                async with client.stream("GET", f"/api/instances/{instance}/events") as response:
                    assert response.status_code == 200
                    connected += 1
                    if connected == clients:
                        ready.set()
                    event = None
                    async for text in response.aiter_lines():
                        if text.startswith("id: "):
                            seen[k].append(text[4:])
                        elif text.startswith("event: "):
                            event = text[7:]
                        elif (
                            text.startswith("data: ")
                            and event == "run_ended"
                            and json.loads(text[6:])["run_id"] == await run_id
                        ):
                            ended_at[k] = time.perf_counter()
                            return

            run_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            followers = [asyncio.ensure_future(follow(k, run_id)) for k in range(clients)]
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(0.2)  # every follower past its catch-up, following live
            start, server_cpu = time.perf_counter(), self.cpu_seconds("serve")
            status, ticket = await conn.request(
                "POST", "/api/workflows/srv_ticks/runs", {"input": [0, ticks], "instance_id": instance}
            )
            assert status == 202, ticket
            run_id.set_result(ticket["run_id"])
            await asyncio.wait_for(asyncio.gather(*followers), 120)
            server_cpu = self.cpu_seconds("serve") - server_cpu
        await conn.aclose()
        expected = [e.event_id async for e in self.runs.events(instance, follow=False)]
        finished = await self.runs.get(ticket["run_id"])
        complete = sum(1 for ids in seen if ids == expected)
        return {
            "clients": clients,
            "events_per_client": len(expected),
            "clients_with_every_event_in_order": complete,
            "seconds_submit_to_last_client_done": round(max(ended_at) - start, 3),
            "last_event_spread_ms": ms(max(ended_at) - min(ended_at)),
            "run_seconds": round((finished.finished_at - finished.started_at).total_seconds(), 3),
            "server_cpu_seconds": round(server_cpu, 3),
            "server_cpu_us_per_message": round(server_cpu * 1e6 / (clients * len(expected)), 1),
        }

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time of one of the processes started (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.procs.procs[name].pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def cleanup(self) -> None:
        client = self.store.client
        batch = [key async for key in client.scan_iter(match=f"{self.prefix}*", count=2000)]
        for start in range(0, len(batch), 1000):
            await client.delete(*batch[start : start + 1000])
        await self.runs.aclose()
        await self.store.aclose()


async def run(args: argparse.Namespace, logs: Path) -> None:
    only = set(args.only.split(","))
    bench = Bench(args.redis_url, logs)
    try:
        bench.start()
        if "submit_wait" in only:
            figures = await bench.submit_wait(args.samples)
            line(
                "submit_wait",
                **figures,
                target="http p50 <= 1.3x direct",
                ok=figures["http_over_direct_p50"] <= 1.3,
            )
        if "fanout" in only:
            figures = await bench.sse_fanout(args.clients, args.ticks)
            line(
                "sse_fanout",
                **figures,
                target="every client gets every event, in order",
                ok=figures["clients_with_every_event_in_order"] == args.clients,
            )
    finally:
        bench.procs.stop_all()
        await bench.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=None, help="default: a private redis-server started for the run"
    )
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=50, help="supersteps of the fan-out run")
    parser.add_argument("--only", default="submit_wait,fanout")
    parser.add_argument(
        "--logs", default=None, help="directory for the processes' logs (default: a temp dir)"
    )
    args = parser.parse_args()
    with redis_for(args.redis_url) as args.redis_url, tempfile.TemporaryDirectory() as tmp:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args, logs))


if __name__ == "__main__":
    main()
