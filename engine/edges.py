"""Edge groups: how a message sent by one executor reaches the next ones.

Routing happens at the barrier, in the coordinator, over each superstep's sent messages in delivery order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Condition = Callable[[Any], Any]  # returns bool or an awaitable of bool


async def holds(condition: Condition | None, message: Any) -> bool:
    """Evaluate a sync or async edge condition (``None`` always holds)."""
    if condition is None:
        return True
    result = condition(message)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


@dataclass(frozen=True, slots=True)
class Case:
    """A branch of a switch: the first case whose ``condition(message)`` holds takes the message."""

    condition: Condition
    target: Any  # an Executor or its id


@dataclass(frozen=True, slots=True)
class Default:
    """The branch of a switch taken when no ``Case`` holds."""

    target: Any


@dataclass(frozen=True, slots=True)
class DirectEdge:
    source: str
    target: str
    condition: Condition | None = None
    kind: str = "edge"

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,)


@dataclass(frozen=True, slots=True)
class FanOutEdges:
    source: str
    targets: tuple[str, ...]
    kind: str = "fan_out"

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)


@dataclass(frozen=True, slots=True)
class FanInEdges:
    """``target`` receives one list: every source's buffered messages, sources in this order."""

    sources: tuple[str, ...]
    target: str
    kind: str = "fan_in"

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,)


@dataclass(frozen=True, slots=True)
class SwitchCaseEdges:
    source: str
    cases: tuple[tuple[Condition | None, str], ...]  # (condition, target); the default has no condition
    kind: str = "switch"

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(target for _, target in self.cases))


EdgeGroup = DirectEdge | FanOutEdges | FanInEdges | SwitchCaseEdges
