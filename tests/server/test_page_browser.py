"""The run inspector page (``GET /``) in a real browser: Debian's chromium, driven by playwright.

A real server (uvicorn on a socket) and a coordinator on the real Redis, under this test's own key prefix. The
browser opens the page, submits the approval example, sees its pending request appear live, answers it in the
form and sees the output arrive, without reloading. Screenshots go to ``test-artifacts/`` (the CI artifacts).
Every request the page makes is recorded: all of them go to the local server, and none carries the API token in
its URL (the event stream is read with fetch() so the token travels in the Authorization header).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

import examples.approval_flow  # noqa: F401 - registers approval_flow: the server lists what this process imported
import tests.server.flows  # noqa: F401 - registers ticker (a long run to cancel)
from tests.server.live_app import LiveApp

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A topic that is also markup: the page must show it as text and never run it.
TOPIC = "release notes <img src=x onerror=window.__xss=1>"
TIMEOUT_MS = 15_000
# ``expect`` has its own timeout (5 s by default), not the page's: a loaded CI machine needs the same margin.
expect.set_options(timeout=TIMEOUT_MS)


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Traffic:
    """Every URL the page requested, and the headers of the API calls."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.authorizations: list[str | None] = []
        page.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)
        if "/api/" in request.url:
            self.authorizations.append(request.headers.get("authorization"))

    def foreign(self, base: str) -> list[str]:
        origin = urlsplit(base).netloc
        return [url for url in self.urls if urlsplit(url).netloc != origin]


@contextlib.contextmanager
def _opened(browser: Browser, live: LiveApp) -> Iterator[tuple[Page, Traffic, list[str]]]:
    """The page at ``live``'s ``/``; closed before the server stops (its event stream would hold it up)."""
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    traffic = Traffic(page)
    try:
        page.goto(live.url + "/")
        yield page, traffic, errors
    finally:
        page.close()


def _screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_person_submits_the_approval_flow_answers_it_and_sees_the_output_live(
    browser: Browser, redis_url: str, real_redis_prefix: str
) -> None:
    with LiveApp(redis_url, real_redis_prefix) as live, _opened(browser, live) as (page, traffic, errors):
        # the workflow, its graph drawn by the vendored mermaid from the API's mermaid text
        card = page.locator('.workflow-card[data-workflow="approval_flow"]')
        graph = card.locator(".graph svg")
        expect(graph).to_be_visible()
        expect(graph.locator("text=writer")).to_have_count(1)
        expect(graph.locator("text=reviewer")).to_have_count(1)
        assert graph.locator(".edgePaths path, path.flowchart-link").count() == 2  # writer <-> reviewer
        _screenshot(page, "page-workflows.png")

        page.evaluate("window.__loadedOnce = true")  # gone if the page reloads
        card.locator("summary", has_text="Submit a run").click()
        textarea, submit = card.locator("textarea[name=input]"), card.get_by_role("button", name="Submit run")

        # errors are shown: input that is not JSON (the page's own check), then the API's 422 with its message
        textarea.fill("release notes")
        submit.click()
        expect(page.locator(".notice-error").last).to_contain_text("InvalidJSON")
        textarea.fill("42")
        submit.click()
        answer = httpx.post(f"{live.url}/api/workflows/approval_flow/runs", json={"input": 42})
        assert answer.status_code == 422
        error = answer.json()["error"]
        notice = page.locator(".notice-error", has_text=f"{error['type']} ({answer.status_code})")
        expect(notice).to_contain_text(error["message"])  # the API's own words
        _screenshot(page, "page-error.png")

        textarea.fill(json.dumps(TOPIC))
        submit.click()

        # the instance view: the pending request appears live, with the draft as text
        expect(page).to_have_url(re.compile(r"#/instances/[0-9a-f]+$"))
        request = page.locator("#requests .request")
        expect(request).to_have_count(1)
        expect(request.locator(".payload")).to_contain_text("a first draft.")
        expect(request.locator(".payload")).to_contain_text(
            "notes <img src=x onerror=window.__xss=1>: a first draft."
        )
        expect(page.locator('#events .event[data-type="request_info"]')).to_have_count(1)
        expect(page.locator("#inst-summary")).to_contain_text("waiting for answers")

        request.locator("input[name=answer]").fill("true")
        request.get_by_role("button", name="Send answer").click()

        # the output arrives over the event stream, the request is gone, the instance is idle
        output = page.locator("#outputs .output")
        expect(output).to_have_count(1)
        expect(output).to_contain_text('"published": true')
        expect(output).to_contain_text('"revision": 1')
        expect(page.locator("#requests .request")).to_have_count(0)
        expect(page.locator("#inst-summary")).to_contain_text("idle")
        expect(page.locator('#events .event[data-type="run_ended"]')).to_have_count(2)
        expect(page.locator("#checkpoints .cp-current")).to_have_count(1)
        assert page.locator("#checkpoints .cp").count() >= 2
        _screenshot(page, "page-instance.png")
        instance_id = page.locator("#inst-id").text_content()

        # the instances list, refreshed: the instance, idle, nothing pending
        page.get_by_role("link", name="← All instances").click()
        row = page.locator(f'#instances tr[data-instance="{instance_id}"]')
        expect(row).to_contain_text("approval_flow")
        expect(row.locator(".badge")).to_have_text("idle")

        assert page.evaluate("window.__loadedOnce") is True, "the page reloaded"
        assert page.evaluate("window.__xss") is None, "server data ran as HTML"
        assert errors == []
        assert traffic.foreign(live.url) == [], "the page loaded something from another host"
        assert any(url.endswith("/static/vendor/mermaid/mermaid.min.js") for url in traffic.urls)


def test_with_a_token_the_page_asks_once_and_sends_it_only_in_headers(
    browser: Browser, redis_url: str, real_redis_prefix: str
) -> None:
    token = "page-test-token-" + real_redis_prefix
    with (
        LiveApp(redis_url, real_redis_prefix, token=token) as live,
        _opened(browser, live) as (page, traffic, errors),
    ):
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()  # the first /api call got a 401
        dialog.locator("input[name=token]").fill(token)
        dialog.get_by_role("button", name="Use token").click()
        expect(dialog).to_be_hidden()

        card = page.locator('.workflow-card[data-workflow="approval_flow"]')
        card.locator("summary", has_text="Submit a run").click()
        card.locator("textarea[name=input]").fill('"token notes"')
        card.get_by_role("button", name="Submit run").click()
        expect(page.locator("#requests .request")).to_have_count(1)  # arrived over the authorized stream
        expect(page.locator("#events-state")).to_have_text("● live")
        expect(page.locator("#health")).to_have_text("Redis ok")

        assert dialog.is_hidden()  # asked once: the dialog never came back
        assert all(token not in url for url in traffic.urls), "the token went into a URL"
        assert f"Bearer {token}" in traffic.authorizations
        assert errors == []


def test_the_buttons_restore_reset_and_cancel_steer_the_instance(
    browser: Browser, redis_url: str, real_redis_prefix: str
) -> None:
    with LiveApp(redis_url, real_redis_prefix) as live, _opened(browser, live) as (page, _, errors):
        api = httpx.Client(base_url=live.url, timeout=10)
        ticket = api.post("/api/workflows/approval_flow/runs", json={"input": "steering", "wait": 10}).json()
        assert ticket["status"] == "idle_with_pending_requests"
        page.goto(f"{live.url}/#/instances/{ticket['instance_id']}")

        page.locator("#requests .request").get_by_role("button", name="true", exact=True).click()
        expect(page.locator("#outputs .output")).to_contain_text('"published": true')
        expect(page.locator("#requests .request")).to_have_count(0)

        # back to the checkpoint that waited for the answer: the request is pending again, on a fork
        asked = page.locator("#checkpoints .cp", has_text="1 pending request").first
        asked_id = asked.get_attribute("data-checkpoint")
        asked.get_by_role("button", name="Restore").click()
        expect(page.locator(".notice-ok", has_text="Restored")).to_be_visible()
        expect(page.locator("#requests .request")).to_have_count(1)
        current = page.locator("#checkpoints .cp-current")
        expect(current.locator(".tag", has_text="from")).to_have_attribute("title", asked_id)
        expect(page.locator("#inst-summary")).to_contain_text("waiting for answers")
        # the lineage forks: the two checkpoints of the abandoned answer sit in a second lane that joins the
        # first at the checkpoint restored to (a lane's x is 10 + 16 * lane)
        expect(page.locator('#checkpoints .lineage circle[cx="26"]')).to_have_count(2)
        in_first_lane = page.locator('#checkpoints .lineage circle[cx="10"]').count()
        assert in_first_lane == page.locator("#checkpoints .cp").count() - 2

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#inst-reset").click()
        expect(page.locator(".notice-ok", has_text="reset")).to_be_visible()
        expect(page.locator("#requests .request")).to_have_count(0)

        # a long run (50 supersteps of 0.1 s) is cancelled by the button while it runs
        ticker = api.post("/api/workflows/ticker/runs", json={"input": {"n": 50, "delay": 0.1}}).json()
        page.goto(f"{live.url}/#/instances/{ticker['instance_id']}")
        expect(page.locator("#outputs .output").first).to_be_visible()  # it runs
        expect(page.locator("#inst-cancel")).to_be_enabled()
        page.locator("#inst-cancel").click()
        expect(page.locator(".notice-ok", has_text="cancelled")).to_be_visible()
        expect(page.locator('#events .event[data-type="run_ended"]')).to_contain_text("cancelled")
        assert api.get(f"/api/runs/{ticker['run_id']}").json()["state"] == "cancelled"
        assert page.locator("#outputs .output").count() < 50
        assert errors == []
