"""Every error answer has one shape, ``{"error": {"type", "message"}}``, whoever raised it.

Route code raises ``ApiError`` (or lets a known exception through); the handlers installed by
``install_error_handlers`` map FastAPI's own errors (validation 422, unknown route 404, 405) and the
barrierflow errors that mean bad input to that shape. Anything else is a 500 with a generic message (its
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from barrierflow.engine.errors import (
    CheckpointDecodeError,
    CheckpointNotFoundError,
    StoreError,
    UnknownRequestError,
    WorkflowRunInProgressError,
)
from barrierflow.json_io import JsonInputError

logger = logging.getLogger("barrierflow.server")

_HTTP_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    503: "ServiceUnavailable",
}


class ApiError(Exception):
    """An error answer: HTTP ``status``, a ``type`` name and a message that says what to change."""

    def __init__(self, status: int, message: str, type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type or _HTTP_TYPES.get(status, "Error")
        self.message = message


def error_body(status: int, message: str, type: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type or _HTTP_TYPES.get(status, "Error"), "message": message}}


def error_response(
    status: int, message: str, type: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, type), status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> str:
    """``field: what is wrong`` for each problem FastAPI found (at most five)."""
    problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]]
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return error_response(exc.status_code, message, headers=dict(exc.headers or {}))

    @app.exception_handler(JsonInputError)
    async def wrong_type(_: Request, exc: JsonInputError) -> JSONResponse:
        return error_response(422, str(exc), "JsonInputError")

    @app.exception_handler(WorkflowRunInProgressError)
    async def busy(_: Request, exc: WorkflowRunInProgressError) -> JSONResponse:
        return error_response(409, str(exc), type(exc).__name__)

    @app.exception_handler(UnknownRequestError)
    async def unknown_request(_: Request, exc: UnknownRequestError) -> JSONResponse:
        return error_response(400, str(exc.args[0] if exc.args else exc), type(exc).__name__)

    @app.exception_handler(CheckpointNotFoundError)
    async def no_checkpoint(_: Request, exc: CheckpointNotFoundError) -> JSONResponse:
        return error_response(404, str(exc.args[0] if exc.args else exc), type(exc).__name__)

    @app.exception_handler(CheckpointDecodeError)
    async def undecodable(_: Request, exc: CheckpointDecodeError) -> JSONResponse:
        # stored data of a type this process never imported: the server's configuration, not the request
        message = f"{exc}; start the server with --import MODULE (the module that registers the type)"
        return error_response(500, message, type(exc).__name__)

    @app.exception_handler(StoreError)
    async def store_down(_: Request, exc: StoreError) -> JSONResponse:
        logger.warning("store error: %s", exc)
        return error_response(503, f"the store did not answer: {exc}", type(exc).__name__)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal error (see the server's log)", "InternalError")
