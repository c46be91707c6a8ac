"""What every request passes before a route sees it: the bearer token and the body size limit.

A pure ASGI middleware (no per-request task or buffering): it reads the ``Authorization`` header from the
scope, compares the token in constant time (``hmac.compare_digest``: the time to refuse does not tell how many
leading characters were right), and counts body bytes as they arrive, answering 413 as soon as the limit is
passed (a declared ``Content-Length`` above it is refused before a byte is read).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

#: Default largest request body, in bytes.
MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` past the limit: an ``HTTPException`` so FastAPI's body reading lets it through
    to the error handlers (any other exception there becomes a 400 "error parsing the body")."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class Guard:
    """Token check on ``/api`` (when a token is set) and a body size limit on every request."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        path: str = scope.get("path", "")
        if self.expected is not None and (path == "/api" or path.startswith("/api/")):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                what = "a wrong bearer token" if given else "no Authorization header"
                await _answer(
                    send,
                    401,
                    "Unauthorized",
                    f"this server needs 'Authorization: Bearer <token>' on /api (got {what})",
                    [(b"www-authenticate", b'Bearer realm="barrierflow"')],
                )
                return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body_bytes
            except ValueError:
                too_large = False
            if too_large:
                await self._too_large(send)
                return
        limit, seen = self.max_body_bytes, 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await _answer(
            send, 413, "PayloadTooLarge", f"the request body is larger than {self.max_body_bytes} bytes"
        )


async def _answer(
    send: Send, status: int, type: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(error_body(status, message, type)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
