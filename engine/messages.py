"""The records that travel between supersteps: queued deliveries and pending requests.

They are plain dataclasses registered with the codec, so they sit in checkpoints and Celery payloads as msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: ``source_ids`` of the run's own input (it has no sending executor).
INPUT_SOURCE = "__input__"


@dataclass(slots=True)
class PendingRequest:
    """A ``request_info`` call waiting for an answer from outside the workflow."""

    request_id: str
    source_executor_id: str
    data: Any
    response_type: type


@dataclass(slots=True)
class Delivery:
    """One queued message for one executor, in the superstep that will deliver it.

    ``source_ids`` are the senders (several for a fan-in list). A response to a request is a delivery whose
    ``request`` is set: it goes to the requesting executor's ``@response_handler``.
    """

    target_id: str
    message: Any
    source_ids: tuple[str, ...] = ()
    request: PendingRequest | None = None
