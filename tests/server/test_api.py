"""The HTTP API in process (httpx's ASGI transport) on the real Redis, with coordinators in this process:
every route of DESIGN §5, its status codes, and the one error shape."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest

from barrierflow.server import create_app


def assert_error(
    response: httpx.Response, status: int, type_: str | None = None, *words: str
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    for word in words:
        assert word in body["error"]["message"], body
    return body["error"]


async def test_health_and_workflows(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/health")).json() == {"redis": "ok"}
    workflows = {w["name"]: w for w in (await client.get("/api/workflows")).json()}
    assert {"typed_order", "approval", "ticker"} <= set(workflows)
    ticker = workflows["ticker"]
    assert ticker["executors"] == ["ticker"] and ticker["start_executor"] == "ticker"
    assert ticker["mermaid"].startswith("flowchart") and len(ticker["signature"]) == 32


async def test_health_is_503_when_redis_does_not_answer() -> None:
    from barrierflow.broker import RedisStore

    store = RedisStore.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # nothing listens there
    app = create_app(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as c:
        assert_error(await c.get("/api/health"), 503, "ServiceUnavailable", "Redis does not answer")
    await store.aclose()


async def test_submit_converts_the_input_to_the_start_executors_declared_type(
    client: httpx.AsyncClient, coordinator: Any
) -> None:
    order = {"customer": "ann", "items": [{"sku": "a", "quantity": 2}, {"sku": "b"}], "rush": True}
    done = await client.post("/api/workflows/typed_order/runs", json={"input": order, "wait": 10})
    assert done.status_code == 200, done.text
    record = done.json()
    assert record["state"] == "completed" and record["status"] == "idle"
    assert record["outputs"] == [{"kind": "order", "customer": "ann", "units": 3, "rush": True}]
    refund = await client.post(
        "/api/workflows/typed_order/runs", json={"input": {"order_id": "o1", "amount": 5}, "wait": 10}
    )
    assert refund.json()["outputs"] == [{"kind": "refund", "order_id": "o1", "amount": 5.0}]  # pydantic model
    note = await client.post("/api/workflows/typed_order/runs", json={"input": "hello", "wait": 10})
    assert note.json()["outputs"] == [{"kind": "note", "text": "hello"}]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"customer": "ann", "items": [{"sku": "a", "quantity": "two"}]}, "input.items[0].quantity"),
        ({"customer": "ann", "items": [{"quantity": 1}]}, "input.items[0].sku"),
        ({"customer": "ann", "colour": "red"}, "input.colour"),
        ({"order_id": "o1", "amount": "lots"}, "input.amount"),
        (12, "input"),
    ],
)
async def test_an_input_of_the_wrong_type_is_a_422_naming_the_field(
    client: httpx.AsyncClient, value: Any, field: str
) -> None:
    response = await client.post("/api/workflows/typed_order/runs", json={"input": value})
    error = assert_error(response, 422, "JsonInputError")
    assert f"{field}:" in error["message"], error


async def test_submit_status_codes(client: httpx.AsyncClient, runs: Any) -> None:
    assert_error(
        await client.post("/api/workflows/nope/runs", json={"input": 1}), 404, "UnknownWorkflow", "nope"
    )
    assert_error(
        await client.post("/api/workflows/ticker/runs", json={"inptu": 1}), 422, "ValidationError", "inptu"
    )
    assert_error(await client.post("/api/workflows/ticker/runs", content=b"{not json"), 422)
    assert_error(await client.post("/api/workflows/ticker/runs", json={}), 422, None, "needs a message")
    assert_error(
        await client.post("/api/workflows/ticker/runs", json={"input": {}, "wait": -1}), 422, None, "wait"
    )
    queued = await client.post("/api/workflows/ticker/runs", json={"input": {"n": 1}})  # no coordinator
    assert queued.status_code == 202 and queued.json()["state"] == "queued"
    ticket = queued.json()
    assert set(ticket) == {"run_id", "instance_id", "state"}
    waited = await client.post(
        "/api/workflows/ticker/runs",
        json={"input": {"n": 1}, "instance_id": ticket["instance_id"], "wait": 0.2},
    )
    assert waited.status_code == 202 and waited.json()["state"] == "queued"  # not ended within the wait
    busy = await client.post(
        "/api/workflows/ticker/runs",
        json={"input": {"n": 1}, "instance_id": ticket["instance_id"], "strategy": "reject"},
    )
    assert_error(busy, 409, "WorkflowRunInProgressError", "busy")
    info = (await client.get(f"/api/instances/{ticket['instance_id']}")).json()
    assert len(info["queued_run_ids"]) == 2  # the refused one was not queued
    for run_id in info["queued_run_ids"]:
        assert (await client.post(f"/api/runs/{run_id}/cancel")).json() == {"cancelled": True}


async def test_runs_get_and_cancel(client: httpx.AsyncClient, coordinator: Any) -> None:
    ticket = (
        await client.post("/api/workflows/ticker/runs", json={"input": {"n": 50, "delay": 0.05}})
    ).json()
    record = (await client.get(f"/api/runs/{ticket['run_id']}")).json()
    assert record["run_id"] == ticket["run_id"] and record["workflow_name"] == "ticker"
    assert record["state"] in ("queued", "running")
    assert (await client.post(f"/api/runs/{ticket['run_id']}/cancel")).json() == {"cancelled": True}
    for _ in range(100):
        record = (await client.get(f"/api/runs/{ticket['run_id']}")).json()
        if record["state"] == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert record["state"] == "cancelled" and record["error"]["type"] == "RunCancelledError"
    assert (await client.post(f"/api/runs/{ticket['run_id']}/cancel")).json() == {"cancelled": False}
    assert_error(await client.get("/api/runs/nope"), 404, "UnknownRun")
    assert_error(await client.get("/api/runs/abc@0123456789abcdef"), 404, "UnknownRun")
    assert_error(await client.post("/api/runs/abc@0123456789abcdef/cancel"), 404, "UnknownRun")


async def test_answering_a_request_with_the_declared_type(
    client: httpx.AsyncClient, coordinator: Any
) -> None:
    asked = (await client.post("/api/workflows/approval/runs", json={"input": "the plan", "wait": 10})).json()
    assert asked["status"] == "idle_with_pending_requests"
    (request_id, request), *_ = asked["pending_requests"].items()
    assert request["response_type"] == "Verdict" and request["data"] == {"question": "approve the plan?"}
    instance = asked["instance_id"]
    answers = f"/api/instances/{instance}/responses"
    assert_error(
        await client.post(answers, json={"nope": True}), 400, "UnknownRequestError", "nope", request_id
    )
    wrong = await client.post(answers, json={request_id: {"approved": "yes"}})
    assert_error(wrong, 422, "JsonInputError", f"{request_id}.approved")
    assert_error(await client.post(answers, json={}), 422)
    assert_error(await client.post(answers, json=[1]), 422)
    assert_error(await client.post("/api/instances/nobody/responses", json={"x": 1}), 404, "UnknownInstance")
    ticket = await client.post(answers, json={request_id: {"approved": True, "note": "ok"}})
    assert ticket.status_code == 202 and ticket.json()["instance_id"] == instance
    for _ in range(200):
        answered = (await client.get(f"/api/runs/{ticket.json()['run_id']}")).json()
        if answered["state"] == "completed":
            break
        await asyncio.sleep(0.02)
    assert answered["outputs"] == [{"approved": True, "note": "ok"}] and answered["status"] == "idle"
    again = (await client.post("/api/workflows/approval/runs", json={"input": "c", "wait": 10})).json()
    (rid, _), *_ = again["pending_requests"].items()
    waited = await client.post(
        f"/api/instances/{again['instance_id']}/responses?wait=10", json={rid: {"approved": True}}
    )
    assert waited.status_code == 200 and waited.json()["outputs"] == [{"approved": True, "note": ""}]
    # the same through the submission body's "responses"
    asked = (await client.post("/api/workflows/approval/runs", json={"input": "b", "wait": 10})).json()
    (request_id, _), *_ = asked["pending_requests"].items()
    body = {"instance_id": asked["instance_id"], "responses": {request_id: {"approved": False}}, "wait": 10}
    done = (await client.post("/api/workflows/approval/runs", json=body)).json()
    assert done["outputs"] == [{"approved": False, "note": ""}]
    body["responses"] = {request_id: {"approved": 1}}
    assert_error(await client.post("/api/workflows/approval/runs", json=body), 400)  # answered already


async def test_instances_listing_info_and_checkpoints(client: httpx.AsyncClient, coordinator: Any) -> None:
    first = (await client.post("/api/workflows/ticker/runs", json={"input": {"n": 3}, "wait": 10})).json()
    other = (await client.post("/api/workflows/approval/runs", json={"input": "x", "wait": 10})).json()
    listed = (await client.get("/api/instances")).json()
    assert [i["instance_id"] for i in listed[:2]] == [other["instance_id"], first["instance_id"]]
    waiting = (await client.get("/api/instances", params={"status": "idle_with_pending_requests"})).json()
    assert [i["instance_id"] for i in waiting] == [other["instance_id"]]
    by_workflow = (await client.get("/api/instances", params={"workflow": "ticker", "limit": 1})).json()
    assert [i["instance_id"] for i in by_workflow] == [first["instance_id"]]
    assert_error(await client.get("/api/instances", params={"status": "IDLE"}), 422, None, "status")
    assert_error(await client.get("/api/instances", params={"limit": 0}), 422, None, "limit")
    info = (await client.get(f"/api/instances/{first['instance_id']}")).json()
    assert info["status"] == "idle" and info["workflow_name"] == "ticker" and info["superstep"] == 3
    assert info["checkpoint_id"] == first["checkpoint_id"] and info["active_run_id"] is None
    checkpoints = (await client.get(f"/api/instances/{first['instance_id']}/checkpoints")).json()
    assert checkpoints[0]["checkpoint_id"] == first["checkpoint_id"]
    assert [c["superstep"] for c in checkpoints] == sorted(
        (c["superstep"] for c in checkpoints), reverse=True
    )
    for newer, older in itertools.pairwise(checkpoints):
        assert newer["previous_checkpoint_id"] == older["checkpoint_id"]  # the lineage
    assert_error(await client.get("/api/instances/nobody"), 404, "UnknownInstance")
    assert_error(await client.get("/api/instances/nobody/checkpoints"), 404, "UnknownInstance")
    assert_error(await client.get("/api/instances/a{b}"), 404, "UnknownInstance")


async def test_reset_and_restore_and_their_409_while_a_run_holds_the_instance(
    client: httpx.AsyncClient, coordinator: Any
) -> None:
    done = (await client.post("/api/workflows/ticker/runs", json={"input": {"n": 2}, "wait": 10})).json()
    instance = done["instance_id"]
    checkpoints = (await client.get(f"/api/instances/{instance}/checkpoints")).json()
    oldest = checkpoints[-1]["checkpoint_id"]
    restored = await client.post(f"/api/instances/{instance}/restore", json={"checkpoint_id": oldest})
    assert restored.status_code == 200 and restored.json()["restored_from"] == oldest
    latest = (await client.get(f"/api/instances/{instance}/checkpoints")).json()[0]
    assert (
        latest["checkpoint_id"] == restored.json()["checkpoint_id"]
        and latest["previous_checkpoint_id"] == oldest
    )
    assert_error(
        await client.post(
            f"/api/instances/{instance}/restore", json={"checkpoint_id": f"{instance}@00000000000000000000"}
        ),
        404,
    )
    assert_error(await client.post(f"/api/instances/{instance}/restore", json={}), 422, None, "checkpoint_id")
    reset = await client.post(f"/api/instances/{instance}/reset")
    assert reset.status_code == 200
    info = (await client.get(f"/api/instances/{instance}")).json()
    assert info["checkpoint_id"] == reset.json()["checkpoint_id"] and info["superstep"] == 0

    running = (
        await client.post(
            "/api/workflows/ticker/runs", json={"input": {"n": 100, "delay": 0.05}, "instance_id": instance}
        )
    ).json()
    for _ in range(100):
        if (await client.get(f"/api/runs/{running['run_id']}")).json()["state"] == "running":
            break
        await asyncio.sleep(0.02)
    assert_error(
        await client.post(f"/api/instances/{instance}/reset"), 409, "InstanceBusy", running["run_id"]
    )
    assert_error(
        await client.post(f"/api/instances/{instance}/restore", json={"checkpoint_id": oldest}),
        409,
        "InstanceBusy",
    )
    await client.post(f"/api/runs/{running['run_id']}/cancel")
    assert_error(await client.post("/api/instances/nobody/reset"), 404, "UnknownInstance")


async def test_bearer_token(make_app: Any) -> None:
    app = make_app(token="s3cret-token")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as c:
        error = assert_error(await c.get("/api/workflows"), 401, "Unauthorized", "Authorization: Bearer")
        assert "s3cret" not in error["message"]
        assert_error(await c.get("/api/health", headers={"Authorization": "Bearer s3cret-tokeN"}), 401)
        assert_error(await c.get("/api/health", headers={"Authorization": "s3cret-token"}), 401)
        assert_error(await c.post("/api/workflows/ticker/runs", json={"input": {"n": 1}}), 401)
        ok = await c.get("/api/health", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json() == {"redis": "ok"}
        assert (await c.get("/openapi.json")).status_code == 200  # the schema is not an /api route


async def test_token_from_the_environment(runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BARRIERFLOW_API_TOKEN", "from-env")
    app = create_app(runs=runs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as c:
        assert (await c.get("/api/health")).status_code == 401
        assert (await c.get("/api/health", headers={"Authorization": "Bearer from-env"})).status_code == 200


async def test_request_bodies_have_a_size_limit(make_app: Any) -> None:
    app = make_app(max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as c:
        big = {"input": "x" * 2000}
        assert_error(
            await c.post("/api/workflows/typed_order/runs", json=big), 413, "PayloadTooLarge", "1000"
        )

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b" " * 400

        streamed = await c.post(
            "/api/workflows/typed_order/runs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(streamed, 413, "PayloadTooLarge")


async def test_no_cors_unless_configured(make_app: Any) -> None:
    preflight = {"Origin": "https://ops.example.com", "Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(make_app()), base_url="http://api") as c:
        response = await c.options("/api/workflows/ticker/runs", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        got = await c.get("/api/health", headers={"Origin": "https://ops.example.com"})
        assert "access-control-allow-origin" not in got.headers
    app = make_app(cors_origins=["https://ops.example.com"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as c:
        response = await c.options("/api/workflows/ticker/runs", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://ops.example.com"
        other = await c.get("/api/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers


async def test_unknown_routes_and_methods_use_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/nothing-here"), 404, "NotFound")
    assert_error(await client.delete("/api/health"), 405, "MethodNotAllowed")
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


async def test_an_instance_whose_state_this_server_cannot_decode_is_listed_from_its_summary(
    client: httpx.AsyncClient, coordinator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started without one workflow's ``--import`` still lists all instances (never a 500)."""
    from barrierflow.engine import codec

    asked = (await client.post("/api/workflows/approval/runs", json={"input": "x", "wait": 10})).json()
    monkeypatch.delitem(codec._BY_NAME, "tests.server.Verdict")  # the request's answer type: unknown here
    listed = (await client.get("/api/instances")).json()
    mine = next(i for i in listed if i["instance_id"] == asked["instance_id"])
    assert mine["status"] == "idle_with_pending_requests" and mine["workflow_name"] == "approval"
    assert mine["checkpoint_id"] == asked["checkpoint_id"] and mine["superstep"] == 1
    assert list(mine["pending_requests"]) == list(asked["pending_requests"])
    single = await client.get(f"/api/instances/{asked['instance_id']}")
    assert single.status_code == 200 and single.json()["pending_requests"] == mine["pending_requests"]


async def test_an_instance_whose_last_output_this_server_cannot_decode_is_listed(
    client: httpx.AsyncClient, coordinator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last run's record holds an output of a type the server never imported: still listed (never a 500)."""
    from barrierflow.engine import codec

    done = (
        await client.post("/api/workflows/echo_item/runs", json={"input": {"sku": "a"}, "wait": 10})
    ).json()
    assert done["outputs"] == [{"sku": "a", "quantity": 1}]
    monkeypatch.delitem(codec._BY_NAME, "tests.server.Item")
    listed = await client.get("/api/instances")
    assert listed.status_code == 200, listed.text
    mine = next(i for i in listed.json() if i["instance_id"] == done["instance_id"])
    assert mine["status"] == "idle" and mine["workflow_name"] == "echo_item"
    single = await client.get(f"/api/instances/{done['instance_id']}")
    assert single.status_code == 200 and single.json()["checkpoint_id"] == done["checkpoint_id"]
