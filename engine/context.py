"""``WorkflowContext``: what a handler can do, recorded into its ``DeliveryOutcome``.

Every method that queues or writes something takes effect when called and returns an awaitable that is already
done, so sync handlers can call them without ``await`` and async handlers may ``await`` them.
Shared-state reads see the state committed at the last barrier plus the writes this executor made earlier in
the same superstep; nothing another executor writes in this superstep is visible until the barrier.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Generator, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar
from uuid import UUID

from . import codec
from .deadlines import AttemptClock
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


_IMMUTABLE = frozenset(
    {type(None), bool, int, float, complex, str, bytes, datetime, date, time, timedelta, UUID, Decimal}
)


def private_copy(value: Any) -> Any:
    """A copy of a committed value that a handler may change freely (immutable values are shared as they are).

    A codec round trip: it copies exactly what a checkpoint holds, at msgpack speed, and it is what a worker,
    which decodes the committed state from its task, hands its handlers too.
    """
    kind = type(value)
    if kind in _IMMUTABLE or isinstance(value, Enum):
        return value
    return codec.decode(codec.encode(value))


class ExecutorView(AttemptClock):
    """One executor's read view during a superstep: committed state plus its own uncommitted writes.

    It is also the ``AttemptClock`` of the executor's batch (``engine/deadlines.py``): the deadline of the
    attempt running against it.

    Handlers never get the committed objects themselves: a mutable committed value is copied the first time
    this executor reads it in the superstep (``private_copy``), and the copy is kept in ``shared_overlay`` (or
    ``executor_state``) so later reads by this executor see the same object. So changing what ``get_*``
    returned never changes committed state, in process or on a worker: only ``set_*`` writes.
    """

    __slots__ = ("committed", "executor_state", "shared", "shared_overlay")

    def __init__(self, shared: Mapping[str, Any], executor_state: Any) -> None:
        self.deadline = self.task = self.watchdog = None  # the AttemptClock, idle
        self.expired = False
        self.shared = shared
        #: what this executor sees for a key: its own write (``_MISSING`` once deleted) or a private copy
        self.shared_overlay: dict[str, Any] = {}
        self.executor_state = executor_state
        #: ``executor_state`` is still the committed object (a read must copy it first)
        self.committed = True

    def rollback(self, committed_state: Any, earlier: Iterable[DeliveryOutcome]) -> None:
        """Forget a failed attempt: back to what the committed state and ``earlier``, the outcomes of this
        executor's deliveries before it in this superstep, make of the view.

        Their writes are replayed from the outcomes, so nothing has to be saved before an attempt (attempts that
        succeed, nearly all of them, cost nothing); private copies are dropped and made again when read.
        """
        overlay: dict[str, Any] = {}
        state, committed = committed_state, True
        for outcome in earlier:
            for key, value, deleted in outcome.state_writes:
                overlay[key] = _MISSING if deleted else value
            if outcome.executor_state:
                state, committed = outcome.executor_state[0], False
        self.shared_overlay, self.executor_state, self.committed = overlay, state, committed

    def fork(self) -> ExecutorView:
        """A view of its own for one attempt, adopted by ``adopt`` if the attempt succeeds.

        For an attempt that may be abandoned while its code still runs (a sync handler past its timeout keeps
        running on its thread): whatever it does later lands in the fork, never in this view.
        """
        view = ExecutorView(self.shared, self.executor_state)
        view.shared_overlay = self.shared_overlay.copy()
        view.committed = self.committed
        return view

    def adopt(self, fork: ExecutorView) -> None:
        self.shared_overlay = fork.shared_overlay
        self.executor_state = fork.executor_state
        self.committed = fork.committed


class WorkflowContext:
    """Passed to every handler. See docs/design.md, "WorkflowContext", for the contract of each call."""

    __slots__ = (
        "_outcome",
        "_sources",
        "_view",
        "executor_id",
        "instance_id",
        "run_id",
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
        source_executor_ids: tuple[str, ...],
        outcome: DeliveryOutcome,
        view: ExecutorView,
    ) -> None:
        self.executor_id = executor_id
        self.run_id = run_id
        self.instance_id = instance_id
        self.superstep = superstep
        self._sources = source_executor_ids
        self._outcome = outcome
        self._view = view

    @property
    def source_executor_ids(self) -> list[str]:
        """The executors that sent this delivery (several for a fan-in list; ``__input__`` for the run's input)."""
        return list(self._sources)

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
        """The committed value plus this executor's own writes; a mutable value is this executor's copy."""
        view = self._view
        overlay = view.shared_overlay
        if key in overlay:
            value = overlay[key]
            return default if value is _MISSING else value
        value = view.shared.get(key, _MISSING)
        if value is _MISSING:
            return default
        if type(value) in _IMMUTABLE:
            return value
        copied = overlay[key] = private_copy(value)
        return copied

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
        """This executor's state: committed, or as it set it in this superstep; a mutable value is a copy."""
        view = self._view
        value = view.executor_state
        if value is _MISSING:
            return default
        if view.committed:
            view.committed = False
            value = view.executor_state = private_copy(value)
        return value

    def set_executor_state(self, value: Any) -> Done[None]:
        """Persist this executor's private state; committed at the barrier, in its checkpoint."""
        view = self._view
        view.executor_state, view.committed = value, False
        self._outcome.executor_state[:] = [value]
        return _DONE


MISSING = _MISSING
