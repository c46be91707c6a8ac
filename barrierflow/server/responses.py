"""The error answers each route documents in ``/openapi.json`` (all in the ``ErrorBody`` shape)."""

from __future__ import annotations

from typing import Any

from .schemas import ErrorBody

_WHY = {
    400: "Bad request (an answer to a request that is not pending)",
    401: "Missing or wrong bearer token (when the server has one)",
    404: "Not found",
    409: "Conflict: the instance is busy",
    413: "Request body too large",
    422: "Invalid body, parameter or input type",
    503: "Redis does not answer",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the given codes plus 401, 413, 422 and 503, which any route may answer."""
    return {
        code: {"model": ErrorBody, "description": _WHY[code]} for code in sorted({*codes, 401, 413, 422, 503})
    }
