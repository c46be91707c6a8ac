"""Server-Sent Events over real HTTP (uvicorn in the test's loop): ids, types and data of each message, the
end of a run's stream, resuming after ``Last-Event-ID`` / ``?after=``, keep-alives, and what a client that goes
away leaves behind (nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.queue.conftest import eventually
from tests.server.sse_client import Message, messages


async def _submit(c: httpx.AsyncClient, workflow: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await c.post(f"/api/workflows/{workflow}/runs", json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()


async def _collect(c: httpx.AsyncClient, path: str, count: int | None = None, **kw: Any) -> list[Message]:
    """Messages with data until ``count`` of them (or the stream's end)."""
    got: list[Message] = []
    async with c.stream("GET", path, **kw) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for message in messages(response):
            if message.data is not None:
                got.append(message)
                if count is not None and len(got) == count:
                    break
    return got


async def test_a_run_stream_has_every_event_with_its_id_and_type_and_ends_with_the_run(
    live: Any, coordinator: Any
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        ticket = await _submit(c, "ticker", {"input": {"n": 3, "delay": 0.05}})
        got = await asyncio.wait_for(_collect(c, f"/api/runs/{ticket['run_id']}/events"), 10)
    types = [m.event for m in got]
    assert types[-1] == "run_ended" and types.count("output") == 3
    assert [m.data["data"] for m in got if m.event == "output"] == [0, 1, 2]
    for m in got:
        assert m.id == m.data["event_id"] and m.event == m.data["type"]
        assert m.data["run_id"] == ticket["run_id"]
    ids = [tuple(map(int, m.id.split("-"))) for m in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    status = [m.data for m in got if m.event == "status"]
    assert status and all(s["data"] == s["data"].lower() for s in status)  # RunState values: "idle"


async def test_instance_stream_resumes_exactly_after_last_event_id_or_after(
    live: Any, coordinator: Any, runs: Any
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        ticket = await _submit(c, "ticker", {"input": {"n": 4}, "wait": 10})
        second = await _submit(
            c, "ticker", {"input": {"n": 2}, "instance_id": ticket["instance_id"], "wait": 10}
        )
        assert second["state"] == "completed"
        path = f"/api/instances/{ticket['instance_id']}/events"
        expected = [e.event_id async for e in runs.events(ticket["instance_id"], follow=False)]
        everything = await asyncio.wait_for(_collect(c, path, len(expected)), 10)
        assert [m.id for m in everything] == expected
        cut = len(expected) // 2
        resumed = await asyncio.wait_for(
            _collect(c, path, len(expected) - cut, headers={"Last-Event-ID": expected[cut - 1]}), 10
        )
        assert [m.id for m in resumed] == expected[cut:]
        by_query = await asyncio.wait_for(_collect(c, f"{path}?after={expected[-2]}", 1), 10)
        assert [m.id for m in by_query] == expected[-1:]
        # and it goes on live: a new run's events arrive on a stream opened before it
        async with c.stream("GET", path, headers={"Last-Event-ID": expected[-1]}) as response:
            stream = messages(response)
            await _submit(c, "ticker", {"input": {"n": 1}, "instance_id": ticket["instance_id"]})
            live_types = []
            async for m in stream:
                if m.event:
                    live_types.append(m.event)
                    if m.event == "run_ended":
                        break
        assert "output" in live_types and live_types[-1] == "run_ended"


async def test_a_run_stream_resumes_after_last_event_id(live: Any, coordinator: Any) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        ticket = await _submit(c, "ticker", {"input": {"n": 3}, "wait": 10})
        path = f"/api/runs/{ticket['run_id']}/events"
        everything = await asyncio.wait_for(_collect(c, path), 10)
        rest = await asyncio.wait_for(_collect(c, path, headers={"Last-Event-ID": everything[2].id}), 10)
    assert [m.id for m in rest] == [m.id for m in everything[3:]]


async def test_an_idle_stream_gets_keep_alive_comments(live: Any, coordinator: Any) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        ticket = await _submit(c, "ticker", {"input": {"n": 1}, "wait": 10})
        path = f"/api/instances/{ticket['instance_id']}/events"
        comments = 0
        async with c.stream("GET", path) as response:
            async with asyncio.timeout(5):
                async for m in messages(response):
                    comments += len(m.comments)
                    if comments >= 2:  # keepalive is 0.2 s in these tests
                        break
    assert comments >= 2


@pytest.mark.parametrize("stream", ["instance", "run"])
async def test_a_client_that_goes_away_leaves_no_follower_task_or_blocked_connection(
    live: Any, runs: Any, qstore: Any, stream: str
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        # no coordinator: the run stays queued, both streams stay open and idle (the reader blocks on XREAD)
        ticket = await _submit(c, "ticker", {"input": {"n": 1}})
        path = (
            f"/api/instances/{ticket['instance_id']}/events"
            if stream == "instance"
            else f"/api/runs/{ticket['run_id']}/events"
        )
        tasks_before = set(asyncio.all_tasks())
        reader = runs._state().reader
        for _ in range(3):
            async with c.stream("GET", path) as response:
                async for m in messages(response):
                    if m.comments and reader._followers:  # idle, and following
                        break
            assert await _blocked_reader(qstore, reader)

        async def nothing_left() -> bool:
            stream_tasks = _stream_tasks(asyncio.all_tasks() - tasks_before)
            return not reader._followers and not stream_tasks and not await _blocked_reader(qstore, reader)

        # well within the reader's block time (5 s): leaving ends its XREAD, it does not wait it out
        await eventually(
            nothing_left, 1.0, "the closed streams' followers, tasks and blocked XREAD to be gone"
        )
        assert (await c.post(f"/api/runs/{ticket['run_id']}/cancel")).json() == {"cancelled": True}


async def _blocked_reader(qstore: Any, reader: Any) -> bool:
    """Whether the queue's stream reader connection is blocked in Redis now (``CLIENT LIST`` flag ``b``)."""
    clients = await qstore.client.client_list()
    return any(cl.get("id") == str(reader._reader_id) and "b" in cl.get("flags", "") for cl in clients)


async def test_event_streams_refuse_bad_cursors_and_unknown_ids(live: Any) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        bad = await c.get("/api/instances/x/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and "event id" in bad.json()["error"]["message"]
        assert (await c.get("/api/instances/no-such-instance/events")).status_code == 404
        unknown_run = await c.get("/api/runs/nope@0123456789abcdef/events")
        assert unknown_run.status_code == 404 and unknown_run.json()["error"]["type"] == "UnknownRun"


def _stream_tasks(tasks: set[asyncio.Task[Any]]) -> list[str]:
    """The tasks that serve an HTTP request or follow an event stream (not the coordinator's runs)."""
    found = []
    for task in tasks:
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        ours = any(
            part in where for part in ("sse_starlette", "uvicorn", "starlette", "server/", "run_events")
        )
        if ours and "_shutdown_watcher" not in code.co_name:  # sse-starlette's one watcher per loop
            found.append(f"{code.co_name} ({where})")
    return found
