"""``barrierflow serve`` as a real process, with a real ``barrierflow coordinator`` process: submit the approval
example over HTTP, follow its instance's events, answer its request, get the published decision."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.queue.conftest import ROOT
from tests.server.conftest import free_port
from tests.server.sse_client import messages

TOKEN = "process-test-token"


@pytest.fixture
def served(redis_url: str, real_redis_prefix: str, tmp_path: Path) -> Any:
    port = free_port()
    env = {
        **os.environ,
        "BARRIERFLOW_API_TOKEN": TOKEN,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    argv = [sys.executable, "-m", "barrierflow.cli.main", "serve", "--port", str(port), "--redis", redis_url]
    argv += ["--prefix", real_redis_prefix, "--import", "examples.approval_flow", "--keepalive", "0.2"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if (
                httpx.get(f"{url}/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
                == 200
            ):
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    try:
        yield url, proc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.slow
async def test_serve_and_a_coordinator_process_run_the_approval_example_over_http(
    served: Any, coordinator_procs: Any
) -> None:
    url, proc, log = served
    assert (
        f"Uvicorn running on http://127.0.0.1:{url.rsplit(':', 1)[1]}" in log.read_text()
    )  # no --host given
    coordinator_procs.start("c1", "--import", "examples.approval_flow")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as c:
        assert (await c.get("/api/health", headers={"Authorization": "Bearer wrong"})).status_code == 401
        names = [w["name"] for w in (await c.get("/api/workflows")).json()]
        assert "approval_flow" in names
        asked = await c.post("/api/workflows/approval_flow/runs", json={"input": "release notes", "wait": 30})
        assert asked.status_code == 200, asked.text
        record = asked.json()
        assert record["status"] == "idle_with_pending_requests", record
        (request_id, request), *_ = record["pending_requests"].items()
        assert request["response_type"] == "bool" and request["data"]["draft"]["topic"] == "release notes"

        seen: list[Any] = []

        async def follow() -> None:
            async with c.stream("GET", f"/api/instances/{record['instance_id']}/events") as response:
                async for message in messages(response):
                    if message.event:
                        seen.append(message)
                        if message.event == "run_ended" and message.data["run_id"] != record["run_id"]:
                            return

        following = asyncio.ensure_future(follow())
        wrong = await c.post(f"/api/instances/{record['instance_id']}/responses", json={request_id: "yes"})
        assert wrong.status_code == 422 and "expected bool" in wrong.json()["error"]["message"]
        answered = await c.post(
            f"/api/instances/{record['instance_id']}/responses?wait=30", json={request_id: True}
        )
        assert answered.status_code == 200, answered.text
        decision = answered.json()["outputs"][-1]
        assert decision["published"] is True and decision["topic"] == "release notes"
        await asyncio.wait_for(following, 30)
        # the Prometheus scrape (outside /api: no token): this server's submissions and the queue read from Redis
        scraped = await c.get("/metrics", headers={"Authorization": ""})
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(scraped.text)
            for s in family.samples
        }
        submitted = (("state", "submitted"), ("workflow", "approval_flow"))
        assert samples[("barrierflow_runs_total", submitted)] == 2  # the first run and the answer's run
        assert samples[("barrierflow_queue_depth", ())] == 0
    outputs = [m.data["data"] for m in seen if m.event == "output"]
    assert outputs == [decision]  # the stream saw the answer's run produce the decision
    ids = [m.id for m in seen]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # the compose api service's healthcheck, run against this server: healthy with the token, not without it
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    check = compose["services"]["api"]["healthcheck"]["test"][3].replace("http://127.0.0.1:8000", url)
    for token, healthy in ((TOKEN, True), ("", False)):
        env = {**os.environ, "BARRIERFLOW_API_TOKEN": token}
        ran = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, timeout=30)
        assert (ran.returncode == 0) is healthy, ran.stderr
    proc.send_signal(signal.SIGTERM)
    # a graceful stop: uvicorn finishes the shutdown, then re-raises the signal it caught (exit by SIGTERM)
    assert proc.wait(15) in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
