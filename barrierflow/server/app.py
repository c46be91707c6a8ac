"""``create_app``: the ASGI app of ``barrierflow serve`` (FastAPI), on top of the run queue (DESIGN §5).

The app never runs a workflow: submissions go to the ``RunQueue`` and the coordinators run them. It holds one
``RunQueue`` (and its store's connection pools) for its whole life, so a request costs its Redis round trips
and nothing more; live event streams share the queue's one blocking reader per event loop
(``broker/run_events.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response

from barrierflow import __version__

from .context import Api
from .errors import install_error_handlers
from .guards import MAX_BODY_BYTES, Guard
from .page import mount_page
from .routes_instances import router as instances_router
from .routes_runs import router as runs_router
from .routes_workflows import router as workflows_router

#: Seconds between SSE keep-alive comments while a stream is idle.
KEEPALIVE = 15.0


def create_app(
    store: Any = None,
    runs: Any = None,
    token: str | None = None,
    *,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    keepalive: float = KEEPALIVE,
    close_store: bool = False,
) -> FastAPI:
    """The API (and, once mounted, the run inspector page) on ``runs`` (a ``RunQueue``) or ``store``.

    Without either, a ``RedisStore`` on ``BARRIERFLOW_REDIS_URL`` (default ``redis://localhost:6379/0``) and
    ``BARRIERFLOW_PREFIX`` (default ``barrierflow``), closed with the app. ``token`` (default:
    ``BARRIERFLOW_API_TOKEN``): when set, every ``/api`` request needs ``Authorization: Bearer <token>``.
    ``cors_origins``: origins allowed to call the API from a browser (none by default). ``max_body_bytes``:
    larger request bodies get 413. ``keepalive``: seconds between SSE comments on an idle stream.
    ``close_store``: close a given ``store`` when the app stops (one it made itself always is).
    """
    owned = close_store or (store is None and runs is None)
    if runs is None:
        from barrierflow.broker import RunQueue

        if store is None:
            store = _store_from_env()
        runs = RunQueue(store)
    api = Api(runs, keepalive=keepalive)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await api.runs.aclose()
            if owned:
                await api.store.aclose()

    app = FastAPI(
        title="barrierflow",
        version=__version__,
        description="Submit, follow, answer and steer the runs of barrierflow's run queue (DESIGN §5).",
        lifespan=lifespan,
    )
    app.state.api = api
    install_error_handlers(app)
    for router in (workflows_router, runs_router, instances_router):
        app.include_router(router)
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    mount_page(app)
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    token = token if token is not None else os.environ.get("BARRIERFLOW_API_TOKEN") or None
    app.add_middleware(Guard, token=token, max_body_bytes=max_body_bytes)
    return app


def _store_from_env() -> Any:
    from barrierflow.broker import RedisStore

    url = os.environ.get("BARRIERFLOW_REDIS_URL") or "redis://localhost:6379/0"
    prefix = os.environ.get("BARRIERFLOW_PREFIX") or "barrierflow"
    return RedisStore.from_url(url, prefix=prefix)


def _metrics() -> Response:
    """The Prometheus scrape of this process (DESIGN §6). A plain ``def``: the queue's figures are read from Redis
    at scrape time (``watch_queue``), on FastAPI's thread pool rather than the event loop. Outside ``/api``, so a
    scraper needs no token; the server binds 127.0.0.1 unless told otherwise."""
    from barrierflow.observability import metrics_response

    body, content_type = metrics_response()
    return Response(body, media_type=content_type)
