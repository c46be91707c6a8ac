"""The run inspector: the web page at ``/`` and its static assets (HTML, CSS, JS, the vendored mermaid).

The page is static: everything it shows comes from the JSON API (``/api/...``) at run time, so the server only
hands out files that ship inside the package (no CDN, no build step). The answers carry a Content-Security-Policy
that allows scripts, styles, fonts and connections from this origin only: even a bug in the page could neither
load nor send anything elsewhere. ``style-src 'unsafe-inline'`` is there because mermaid writes a ``<style>``
element into each SVG it draws.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")

#: Where the assets are served from (the page refers to them by this path).
STATIC_PATH = "/static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _PageAssets(StaticFiles):
    """``StaticFiles`` whose answers carry the page's security headers (a ``.js`` file is sniffed otherwise)."""

    def file_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


async def _index(request: Request) -> FileResponse:
    # no-cache: the browser revalidates (ETag), so an upgraded package never runs an old page with new assets
    return FileResponse(STATIC_DIR / "index.html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


def mount_page(app: Starlette) -> None:
    """Serve the run inspector on ``app``: ``GET /`` and the assets under ``/static`` (neither in the schema)."""
    app.add_route("/", _index, methods=["GET"], include_in_schema=False)
    app.mount(STATIC_PATH, _PageAssets(directory=STATIC_DIR, check_dir=True), name="static")
