"""``WorkflowContext``: what a handler can do, recorded into its ``DeliveryOutcome``.

Every method that queues or writes something takes effect when called and returns an awaitable that is already
done, so sync handlers can call them without ``await`` and async handlers may ``await`` them.
Shared-state reads see the state committed at the last barrier plus the writes this executor made earlier in
the same superstep; nothing another executor writes in this superstep is visible until the barrier.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Generator, Mapping
from typing import Any, Generic, TypeVar

from .events import EventType, WorkflowEvent, request_info_event
from .messages import PendingRequest
from .outcome import DeliveryOutcome
from .typing_utils import flatten_union

T = TypeVar("T")
_MISSING: Any = object()


class Done(Generic[T]):
    """An awaitable that is already complete (so ``await ctx.send_message(...)`` costs no suspension)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self.value
        yield  # pragma: no cover - makes this a generator


_DONE: Done[None] = Done(None)


class ContextAlias:
    """What ``WorkflowContext[T]`` / ``WorkflowContext[T, U]`` evaluates to: it records the declared types."""

    __slots__ = ("params",)

    def __init__(self, params: tuple[Any, ...]) -> None:
        self.params = params

    def __repr__(self) -> str:
        return f"WorkflowContext[{', '.join(map(repr, self.params))}]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContextAlias) and other.params == self.params

    def __hash__(self) -> int:
        return hash(self.params)


def context_output_types(annotation: Any) -> tuple[Any, ...] | None:
    """Message types a handler declares it sends through ``WorkflowContext[T]``; ``None`` when undeclared."""
    if not isinstance(annotation, ContextAlias) or not annotation.params:
        return None
    sent = annotation.params[0]
    if sent in (None, type(None), typing.Never, typing.NoReturn):
        return ()
    return flatten_union(sent)


class ExecutorView:
    """One executor's read view during a superstep: committed state plus its own uncommitted writes."""

    __slots__ = ("executor_state", "shared", "shared_overlay")

    def __init__(self, shared: Mapping[str, Any], executor_state: Any) -> None:
        self.shared = shared
        self.shared_overlay: dict[str, Any] = {}
        self.executor_state = executor_state


class WorkflowContext:
    """Passed to every handler. See docs/design.md, "WorkflowContext", for the contract of each call."""

    __slots__ = (
        "_outcome",
        "_view",
        "executor_id",
        "instance_id",
        "run_id",
        "source_executor_ids",
        "superstep",
    )

    def __class_getitem__(cls, params: Any) -> ContextAlias:
        return ContextAlias(params if isinstance(params, tuple) else (params,))

    def __init__(  # positional: one is made per delivery, on the hot path
        self,
        executor_id: str,
        run_id: str,
        instance_id: str,
        superstep: int,
        source_executor_ids: list[str],
        outcome: DeliveryOutcome,
        view: ExecutorView,
    ) -> None:
        self.executor_id = executor_id
        self.run_id = run_id
        self.instance_id = instance_id
        self.superstep = superstep
        self.source_executor_ids = source_executor_ids
        self._outcome = outcome
        self._view = view

    # -- messages, outputs, events ------------------------------------------------------------------------

    def send_message(self, message: Any, target_id: str | None = None) -> Done[None]:
        """Queue ``message`` for the next superstep along this executor's edges (to ``target_id`` only)."""
        self._outcome.sent.append((message, target_id))
        return _DONE

    def yield_output(self, value: Any) -> Done[None]:
        """A workflow output; emitted as an ``output`` event when this superstep commits."""
        self._outcome.emitted.append(
            WorkflowEvent(EventType.OUTPUT, value, executor_id=self.executor_id, superstep=self.superstep)
        )
        return _DONE

    def add_event(self, event: WorkflowEvent) -> Done[None]:
        """A custom event; emitted when this superstep commits, in the order handlers were delivered."""
        if not isinstance(event, WorkflowEvent):
            raise TypeError(f"add_event takes a WorkflowEvent, not {type(event).__name__}")
        if event.executor_id is None:
            event.executor_id = self.executor_id
        if event.superstep is None:
            event.superstep = self.superstep
        self._outcome.emitted.append(event)
        return _DONE

    def request_info(self, data: Any, response_type: type, *, request_id: str | None = None) -> Done[str]:
        """Ask the outside world; the run pauses once nothing else is queued. Returns the request id."""
        if not isinstance(response_type, type) and response_type is not Any:
            raise TypeError(f"response_type must be a class, not {response_type!r}")
        rid = request_id if request_id is not None else os.urandom(8).hex()
        request = PendingRequest(rid, self.executor_id, data, response_type)
        self._outcome.requests.append(request)
        self._outcome.emitted.append(request_info_event(request, self.superstep))
        return Done(rid)

    # -- shared state -------------------------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        overlay = self._view.shared_overlay
        if key in overlay:
            value = overlay[key]
            return default if value is _MISSING else value
        return self._view.shared.get(key, default)

    def set_state(self, key: str, value: Any) -> Done[None]:
        """Write shared state; visible to this executor now, to others after the barrier."""
        self._view.shared_overlay[key] = value
        self._outcome.state_writes.append((key, value, False))
        return _DONE

    def delete_state(self, key: str) -> Done[None]:
        self._view.shared_overlay[key] = _MISSING
        self._outcome.state_writes.append((key, None, True))
        return _DONE

    def has_state(self, key: str) -> bool:
        return self.get_state(key, _MISSING) is not _MISSING

    # -- executor state -----------------------------------------------------------------------------------

    def get_executor_state(self, default: Any = None) -> Any:
        value = self._view.executor_state
        return default if value is _MISSING else value

    def set_executor_state(self, value: Any) -> Done[None]:
        """Persist this executor's private state; committed at the barrier, in its checkpoint."""
        self._view.executor_state = value
        self._outcome.executor_state[:] = [value]
        return _DONE


MISSING = _MISSING
