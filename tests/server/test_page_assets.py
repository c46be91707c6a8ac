"""The run inspector's files, served by ``mount_page`` (fast checks; the browser test runs the page itself)."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette

from barrierflow.server.page import STATIC_DIR, mount_page


@pytest.fixture
async def client():
    app = Starlette()
    mount_page(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://page") as http:
        yield http


def _references() -> set[str]:
    """Every asset path the page refers to: src/href in index.html, imports between its modules."""
    html = (STATIC_DIR / "index.html").read_text()
    found = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    for script in (STATIC_DIR / "js").glob("*.js"):
        found |= {f"/static/js/{name}" for name in re.findall(r'from "\./([\w.-]+\.js)"', script.read_text())}
    return found


async def test_the_page_and_every_asset_it_refers_to_are_served_with_a_same_origin_policy(client) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    references = _references()
    assert {"/static/js/main.js", "/static/js/api.js", "/static/vendor/mermaid/mermaid.min.js"} <= references
    for path in sorted(references):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
    assert (
        (await client.get("/static/js/main.js"))
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )


async def test_nothing_outside_the_static_folder_is_served(client) -> None:
    for path in (
        "/static/../page.py",
        "/static/%2e%2e/page.py",
        "/static/js/../../page.py",
        "/static/nope.js",
    ):
        assert (await client.get(path)).status_code == 404, path


def test_the_mermaid_bundle_ships_with_its_licenses() -> None:
    vendor = STATIC_DIR / "vendor" / "mermaid"
    assert "MIT License" in (vendor / "LICENSE").read_text()
    notices = (vendor / "THIRD_PARTY_LICENSES.txt").read_text()
    for bundled in ("dompurify@", "d3-selection@", "dagre-d3-es@", "khroma@"):
        assert bundled in notices, bundled


def test_the_page_scripts_never_parse_strings_as_html() -> None:
    """Server data reaches the DOM through textContent only (the browser test also feeds it markup)."""
    for script in (STATIC_DIR / "js").glob("*.js"):
        code = script.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in code, f"{script.name} uses {sink}"
