"""Observability of the service, across real processes: a Celery worker (``-E``: task events on) and a
``barrierflow coordinator --celery --metrics-port 0 --log-format json`` process, both importing
``tests.otel_capture`` (their spans go to a file), and runs submitted from this process (its spans to memory).

- the span tree of a distributed run has the right parents across the processes, and its run links to its
  submission;
- metrics scraped over HTTP from the coordinator move as runs complete, fail and retry;
- the coordinator's and the worker's JSON log lines carry the run, instance and trace ids;
- ``celery events`` (the event receiver API Flower uses) shows the workflow, instance, superstep and executors
  of each task instead of its payload's bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from barrierflow.broker import RedisStore, RunQueue
from barrierflow.engine import ExecutorFailedError
from barrierflow.workers.process import worker_command
from tests.conftest import delete_prefix
from tests.observability.conftest import as_records, children, named
from tests.observability_flows import job
from tests.redis_hygiene import SESSION, forget_celery_nodes
from tests.workers.conftest import ROOT, delete_queue_keys, worker_env

pytestmark = pytest.mark.slow

IMPORTS = ["tests.otel_capture", "tests.observability_flows"]


@dataclass
class Service:
    redis_url: str
    prefix: str
    queue: str
    spans_file: Path
    coordinator_log: Path
    worker_log: Path
    metrics_url: str

    def remote_spans(self) -> list[dict[str, Any]]:
        if not self.spans_file.exists():
            return []
        return [json.loads(line) for line in self.spans_file.read_text().splitlines() if line]

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="module")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("observability")
    prefix = f"bftest-{SESSION}-obs-{uuid.uuid4().hex[:6]}"
    queue = f"bftest-{SESSION}-obsq-{uuid.uuid4().hex[:6]}"
    spans_file = tmp / "spans.jsonl"
    env = worker_env(redis_url, queue)
    env.update(
        BARRIERFLOW_PREFIX=prefix,
        BARRIERFLOW_IMPORTS=",".join(IMPORTS),
        BFTEST_SPANS=str(spans_file),
        BARRIERFLOW_LOG_FORMAT="json",
    )
    name = f"bftest-obs-{queue[-6:]}"
    worker = _start([*worker_command(queue, name, loglevel="info"), "-E"], env, tmp / "worker.log")
    argv = [sys.executable, "-m", "barrierflow.cli.main", "coordinator", "--celery", "--redis", redis_url]
    argv += ["--prefix", prefix, "--lock-ttl", "3", "--metrics-port", "0", "--log-format", "json"]
    for module in IMPORTS:
        argv += ["--import", module]
    coordinator = _start(argv, env, tmp / "coordinator.log")
    node = f"{name}@{__import__('socket').gethostname()}"
    try:
        metrics_url = _wait_for_metrics(tmp / "coordinator.log", coordinator)
        _wait_for_worker(redis_url, prefix, queue, node, worker, tmp / "worker.log")
        yield Service(
            redis_url, prefix, queue, spans_file, tmp / "coordinator.log", tmp / "worker.log", metrics_url
        )
    finally:
        _stop(coordinator)
        _stop(worker)
        forget_celery_nodes(redis_url, [node])
        delete_queue_keys(redis_url, queue)
        delete_prefix(redis_url, prefix)


def _wait_for_metrics(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"metrics at (http://\S+/metrics)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the coordinator serves no metrics: {log.read_text(errors='replace')[-3000:]}")


def _wait_for_worker(url: str, prefix: str, queue: str, node: str, proc: Any, log: Path) -> None:
    from barrierflow.broker.worker_registry import live_workers

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    try:
        while node not in {w.node for w in live_workers(client, prefix, queue)}:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture
async def runs(service: Service) -> Any:
    store = RedisStore.from_url(service.redis_url, prefix=service.prefix)
    async with RunQueue(store) as queue:
        yield queue
    await store.aclose()


def _wait_spans(service: Service, count: int, what: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The remote spans once ``what(spans)`` holds ``count`` of them (span ends are written after replies)."""
    deadline = time.monotonic() + timeout
    while True:
        records = service.remote_spans()
        if len(what(records)) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


async def test_a_distributed_run_is_one_trace_across_processes(
    service: Service, runs: RunQueue, spans
) -> None:
    ticket = await runs.submit("obs_flaky", job(f"{service.prefix}-t", fail=1))
    result = await runs.wait(ticket.run_id, timeout=60)
    assert result.outputs == [[f"left:{service.prefix}-t", f"right:{service.prefix}-t"]]

    [submit] = named(as_records(spans.get_finished_spans()), "barrierflow.queue.submit")
    assert submit["attributes"]["barrierflow.run_id"] == ticket.run_id

    def runs_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in named(records, "barrierflow.run")
            if r["attributes"]["barrierflow.run_id"] == ticket.run_id
        ]

    records = _wait_spans(service, 1, runs_of)
    [run] = runs_of(records)
    assert run["links"] == [submit["span_id"]]  # the run links to its submission
    coordinator_pid = run["pid"]
    steps = children(records, run, "barrierflow.superstep")
    assert [s["attributes"]["barrierflow.superstep"] for s in steps] == [1, 2, 3]
    assert all(s["pid"] == coordinator_pid for s in steps)
    [claim] = [
        r
        for r in named(records, "barrierflow.queue.claim")
        if r["attributes"].get("barrierflow.run_id") == ticket.run_id
    ]
    assert claim["pid"] == coordinator_pid

    delivers = [d for s in steps for d in children(records, s, "barrierflow.deliver")]
    assert sorted(d["attributes"]["barrierflow.executor_id"] for d in delivers) == [
        "fetch",
        "join",
        "left",
        "right",
    ]
    assert all(d["pid"] != coordinator_pid for d in delivers)  # on the worker, under the coordinator's step
    [fetch] = [d for d in delivers if d["attributes"]["barrierflow.executor_id"] == "fetch"]
    attempts = children(records, fetch, "barrierflow.handler")
    assert [(a["attributes"]["barrierflow.attempt"], a["status"]) for a in attempts] == [
        (1, "ERROR"),
        (2, "UNSET"),
    ]
    assert {a["attributes"]["barrierflow.run_id"] for a in attempts} == {ticket.run_id}
    assert fetch["attributes"]["barrierflow.instance_id"] == ticket.instance_id


async def test_metrics_move_as_runs_complete_fail_and_retry(service: Service, runs: RunQueue) -> None:
    before = service.scrape()
    ok = await runs.submit("obs_flaky", job(f"{service.prefix}-ok", fail=2))
    await runs.wait(ok.run_id, timeout=60)
    bad = await runs.submit("obs_flaky", job(f"{service.prefix}-bad", fail=5))
    with pytest.raises(ExecutorFailedError):
        await runs.wait(bad.run_id, timeout=60)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    deadline = time.monotonic() + 10
    while True:  # the coordinator counts a run's end once it recorded it: just after the waiter hears of it
        after = service.scrape()
        if (
            moved("barrierflow_runs_total", workflow="obs_flaky", state="failed")
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)

    assert moved("barrierflow_runs_total", workflow="obs_flaky", state="started") == 2
    assert moved("barrierflow_runs_total", workflow="obs_flaky", state="completed") == 1
    assert moved("barrierflow_runs_total", workflow="obs_flaky", state="failed") == 1
    # fetch: 2 retries then success; 2 retries then the final failure. Deliveries: what ended, either way
    assert moved("barrierflow_retries_total", workflow="obs_flaky", executor="fetch") == 4
    assert moved("barrierflow_deliveries_total", workflow="obs_flaky", executor="fetch") == 2
    assert moved("barrierflow_deliveries_total", workflow="obs_flaky", executor="join") == 1
    assert moved("barrierflow_superstep_duration_seconds_count", workflow="obs_flaky") == 3
    assert (
        moved("barrierflow_checkpoint_bytes_count") >= 4 + 1
    )  # superstep 0 and 3 barriers; 1 of the failed run
    assert after[("barrierflow_runs_in_flight", ())] == 0
    assert after[("barrierflow_queue_depth", ())] == 0
    assert ("barrierflow_lease_takeovers_total", ()) in after


async def test_queue_figures_are_read_from_redis(service: Service, runs: RunQueue) -> None:
    """Runs submitted under a prefix no coordinator serves wait: they are the queue's depth and age."""
    from barrierflow.broker.metrics import QueueCollector

    idle_prefix = f"{service.prefix}-idle"
    store = RedisStore.from_url(service.redis_url, prefix=idle_prefix)
    try:
        async with RunQueue(store) as idle:
            collector = QueueCollector(redis.Redis.from_url(service.redis_url), idle.ready_key)
            assert collector.figures() == (0, 0.0)
            for n in range(3):
                await idle.submit("obs_flaky", job(f"idle-{n}"))
            await idle.submit(
                "obs_flaky", job("idle-0b"), instance_id=(await idle.list_instances())[0].instance_id
            )
            time.sleep(0.2)
            depth, age = collector.figures()
            assert depth == 3  # instances waiting: a second run of one instance waits for its instance
            assert 0.2 <= age < 30
            collector.client.close()
    finally:
        await store.aclose()
        delete_prefix(service.redis_url, idle_prefix)


async def test_logs_carry_the_ids(service: Service, runs: RunQueue) -> None:
    ticket = await runs.submit("obs_flaky", job(f"{service.prefix}-log", fail=1))
    await runs.wait(ticket.run_id, timeout=60)
    deadline = time.monotonic() + 10
    while True:
        lines = [
            json.loads(line) for line in service.coordinator_log.read_text().splitlines() if line[:1] == "{"
        ]
        mine = [line for line in lines if line.get("run_id") == ticket.run_id]
        if len(mine) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [line["message"] for line in mine] == [
        f"run {ticket.run_id} (obs_flaky) started, attempt 1",
        f"run {ticket.run_id} completed",
    ]
    assert all(line["level"] == "INFO" and line["instance_id"] == ticket.instance_id for line in mine)
    assert re.fullmatch(r"[0-9a-f]{32}", mine[-1]["trace_id"])  # known once the run's span exists
    worker_lines = [
        json.loads(line) for line in service.worker_log.read_text().splitlines() if line[:1] == "{"
    ]
    assert any(line.get("run_id") == ticket.run_id for line in worker_lines), worker_lines[-5:]


async def test_celery_events_show_a_readable_summary(service: Service, runs: RunQueue) -> None:
    """What Flower shows: the task events' ``args`` are the summary, not the msgpack payload."""
    from barrierflow.workers import app

    received: list[dict[str, Any]] = []
    ready = threading.Event()
    stop = threading.Event()
    event_queue = f"bftest-{SESSION}-ev"

    def listen() -> None:
        with app.connection_for_read(service.redis_url) as connection:
            receiver = app.events.Receiver(
                connection, handlers={"task-received": received.append}, queue_prefix=event_queue
            )
            consumer = receiver.itercapture(limit=None, timeout=0.2, wakeup=False)
            ready.set()
            while not stop.is_set():
                try:
                    next(consumer)
                except (TimeoutError, OSError):
                    continue
                except StopIteration:
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        time.sleep(0.3)  # the receiver's queue is bound
        ticket = await runs.submit("obs_flaky", job(f"{service.prefix}-ev"))
        await runs.wait(ticket.run_id, timeout=60)
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
        client = redis.Redis.from_url(service.redis_url)
        for table in client.scan_iter(match="_kombu.binding.celeryev*"):
            stale = [m for m in client.smembers(table) if event_queue.encode() in m]
            if stale:
                client.srem(table, *stale)
        client.close()
    summaries = [event["args"] for event in received if ticket.instance_id in event.get("args", "")]
    assert {int(re.search(r"superstep=(\d+)", s).group(1)) for s in summaries} == {1, 2, 3}, received
    assert summaries[0] == (
        f"(workflow='obs_flaky', instance='{ticket.instance_id}', superstep=1, task=0, executors=['fetch'], "
        "deliveries=1)"
    )
    assert {event["name"] for event in received} == {"barrierflow.run_batches"}
    assert "superstep=2" in " ".join(summaries) and "'left'" in " ".join(summaries)


async def test_packed_copies_keep_their_own_trace_context(service: Service, runs: RunQueue, spans) -> None:
    """Runs whose supersteps are ready together go to the worker packed in one Celery task: each copy's deliver
    spans still hang under its own run's superstep span (the pack carries one context per copy)."""
    tickets = await asyncio.gather(
        *(runs.submit("obs_flaky", job(f"{service.prefix}-pack{n}")) for n in range(6))
    )
    for ticket in tickets:
        await runs.wait(ticket.run_id, timeout=60)
    ids = {ticket.run_id for ticket in tickets}
    deadline = time.monotonic() + 10
    while True:
        records = service.remote_spans()
        delivers = [
            r
            for r in named(records, "barrierflow.deliver")
            if r["attributes"].get("barrierflow.run_id") in ids
        ]
        if len(delivers) >= 6 * 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "barrierflow.run_pack" in service.worker_log.read_text()  # some of them did travel packed
    by_id = {r["span_id"]: r for r in records}
    assert len(delivers) == 6 * 4
    for deliver in delivers:
        step = by_id[deliver["parent_id"]]
        assert step["name"] == "barrierflow.superstep"
        assert step["attributes"]["barrierflow.run_id"] == deliver["attributes"]["barrierflow.run_id"]
        assert step["attributes"]["barrierflow.superstep"] == deliver["attributes"]["barrierflow.superstep"]
