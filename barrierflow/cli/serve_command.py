"""``barrierflow serve``: the HTTP API and the run inspector page (``barrierflow.server``) under uvicorn.

The server never runs workflows: it submits to the run queue, so start coordinators too (``barrierflow
coordinator``). ``--import`` the same modules as the coordinators: the server converts JSON inputs and answers
to the workflows' declared types and decodes their outputs. FastAPI and uvicorn are imported by this command
only.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated

import typer

from . import backends
from .backends import RedisTarget
from .errors import CliError, reported
from .options import Debug, Imports, LogFormat, Prefix, RedisUrl, start, start_logging, with_imports

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Interface to listen on. Only this machine by default; 0.0.0.0 exposes the API."
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port.")] = DEFAULT_PORT,
    imports: Imports = None,
    cors_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="Let pages from ORIGIN (like https://ops.example.com) call the API (repeatable; none by default).",
        ),
    ] = None,
    max_body: Annotated[
        int,
        typer.Option("--max-body", metavar="BYTES", min=1, help="Largest request body accepted (413 above)."),
    ] = 1 << 20,
    keepalive: Annotated[
        float,
        typer.Option(
            "--keepalive",
            metavar="SECONDS",
            min=0.05,
            help="Keep-alive comment interval of idle event streams.",
        ),
    ] = 15.0,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING...")] = "INFO",
    log_format: LogFormat = "text",
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Serve the HTTP API (/api, /docs) and the run inspector page (/) on the run queue, until Ctrl-C.

    With BARRIERFLOW_API_TOKEN set, every /api request needs 'Authorization: Bearer <token>'.
    """
    start(debug)
    start_logging(log_level, log_format)
    with reported():
        with_imports(imports)
        target = RedisTarget.resolve(redis)
        asyncio.run(_check(target, prefix))
        _check_port(host, port)
        try:
            import uvicorn

            from barrierflow.broker import RedisStore
            from barrierflow.server import create_app
        except ImportError as exc:
            raise CliError(f"the server's dependencies are missing ({exc}): pip install barrierflow") from exc
        from barrierflow.observability import watch_queue

        watch_queue(target.url, prefix)  # /metrics: the queue's depth and oldest age, read at scrape time
        store = RedisStore.from_url(target.url, prefix=prefix, socket_connect_timeout=3.0)
        app = create_app(
            store,
            cors_origins=cors_origins or (),
            max_body_bytes=max_body,
            keepalive=keepalive,
            close_store=True,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level.lower(),
            server_header=False,
            timeout_graceful_shutdown=5,
            # JSON logs: uvicorn's loggers go to the root logger's JSON handler instead of their own text ones
            **({"log_config": None} if log_format == "json" else {}),
        )
        uvicorn.Server(config).run()


async def _check(target: RedisTarget, prefix: str) -> None:
    """Fail now (exit 3, with advice) when Redis does not answer, rather than on the first request."""
    store = await backends.redis_store(target, prefix)
    await backends.close_store(store)


def _check_port(host: str, port: int) -> None:
    """A taken port is a one-line error (exit 2) before anything starts.

    Left to uvicorn, it was uvicorn's own log line after the app had started, and exit code 3, which
    barrierflow's exit codes say means "Redis unreachable". The socket is closed again: uvicorn binds its own
    (and prints where it listens), so a port taken in between still fails, only less clearly.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            probe.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CliError(
            f"cannot listen on {host}:{port}: {reason} (another server there? choose another --port or --host)"
        ) from exc
