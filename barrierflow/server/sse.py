"""Server-Sent Events of a run or an instance: ``id:`` the event id, ``event:`` its type, ``data:`` its JSON.

A stream is an async generator over ``RunQueue.stream``/``events`` wrapped in ``aclosing``: when the client
goes away, sse-starlette cancels the response and the ``finally`` of every generator in the chain runs at
once (the follower leaves the queue's shared stream reader), instead of whenever the garbage collector gets
to them. Idle streams get a keep-alive comment every ``keepalive`` seconds, so proxies keep them open and a
dead client is noticed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from barrierflow.broker.run_events import parse_id
from barrierflow.engine.events import WorkflowEvent
from barrierflow.records import event_record

from .errors import ApiError

#: How ``/openapi.json`` describes an event stream.
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id` = event_id, `event` = type, `data` = the event as JSON",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def cursor(last_event_id: str | None, after: str | None) -> str | None:
    """The event id to resume after: ``Last-Event-ID`` (a reconnecting browser's) wins over ``?after=``."""
    chosen = last_event_id or after
    if chosen is None:
        return None
    try:
        parse_id(chosen)
    except ValueError as exc:
        raise ApiError(422, str(exc), "ValidationError") from None
    return chosen


def message(event: WorkflowEvent) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(event_record(event), ensure_ascii=False, separators=(",", ":")),
        event=event.type,
        id=event.event_id,
    )


async def _messages(
    events: AsyncIterator[WorkflowEvent], after: str | None
) -> AsyncIterator[ServerSentEvent]:
    skip = parse_id(after) if after is not None else None
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if skip is not None and event.event_id is not None and parse_id(event.event_id) <= skip:
                continue
            yield message(event)


def event_stream(events: AsyncIterator[WorkflowEvent], keepalive: float, after: str | None = None) -> Any:
    """The response for ``events``; events up to ``after`` (already seen by the client) are left out."""
    return EventSourceResponse(
        _messages(events, after),
        ping=keepalive,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        send_timeout=30.0,
    )
