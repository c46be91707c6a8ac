"""A small Server-Sent Events reader for the tests: ``(id, event, data)`` messages and comment lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: Any = None
    comments: list[str] = field(default_factory=list)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Each message of the stream; comment lines (keep-alives) ride on the next message or a bare one."""
    current = Message()
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or current.comments or current.id or current.event:
                if data:
                    current.data = json.loads("\n".join(data))
                yield current
            current, data = Message(), []
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            data.append(value)
