"""Server-Sent Events of a run or an instance: ``id:`` the event id, ``event:`` its type, ``data:`` its JSON.

A stream is an async generator over ``RunQueue.stream``/``events`` wrapped in ``aclosing``: when the client
goes away, sse-starlette cancels the response and the ``finally`` of every generator in the chain runs at
once (the follower leaves the queue's shared stream reader), instead of whenever the garbage collector gets
to them. Idle streams get a keep-alive comment every ``keepalive`` seconds, so proxies keep them open and a
dead client is noticed.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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


class EncodedEvents:
    """The SSE bytes of recent events, shared by every stream of the app.

    200 clients following one instance get the same event 200 times: it is turned into JSON and framed once,
    then each stream sends the same bytes. Keyed by ``(instance, event_id)`` (stream ids are unique within an
    instance's stream only); the oldest entries go first past ``size``.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, instance_id: str, event: WorkflowEvent) -> bytes:
        if event.event_id is None:
            return encode(event)
        key = (instance_id, event.event_id)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = encode(event)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return found


def encode(event: WorkflowEvent) -> bytes:
    """``id:``, ``event:`` and ``data:`` lines of one message (the event's record, compact JSON)."""
    data = json.dumps(event_record(event), ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(data=data, event=event.type, id=event.event_id).encode()


async def _messages(
    events: AsyncIterator[WorkflowEvent], instance_id: str, encoded: EncodedEvents, after: str | None
) -> AsyncIterator[bytes]:
    skip = parse_id(after) if after is not None else None
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if skip is not None and event.event_id is not None and parse_id(event.event_id) <= skip:
                continue
            yield encoded.get(instance_id, event)


def event_stream(
    events: AsyncIterator[WorkflowEvent],
    instance_id: str,
    encoded: EncodedEvents,
    keepalive: float,
    after: str | None = None,
) -> Any:
    """The response for ``events`` of ``instance_id``; events up to ``after`` (seen by the client) are left
    out."""
    return EventSourceResponse(
        _messages(events, instance_id, encoded, after),
        ping=keepalive,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        send_timeout=30.0,
    )
