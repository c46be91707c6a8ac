"""Routing at the barrier: a superstep's sent messages become the next superstep's deliveries.

Order is the contract's total order: senders in the order they were delivered, each sender's messages in send
order, a fan-out message to its targets in the order the group lists them; fan-in lists come after the direct
deliveries, in the order their groups first received a message this superstep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .edges import DirectEdge, FanInEdges, FanOutEdges, SwitchCaseEdges, holds
from .graph import Graph
from .messages import Delivery
from .outcome import DeliveryOutcome


@dataclass(slots=True)
class Routed:
    deliveries: list[Delivery] = field(default_factory=list)
    fan_in_buffers: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


async def route(
    graph: Graph, outcomes: Iterable[DeliveryOutcome], fan_in_buffers: dict[str, dict[str, list[Any]]]
) -> Routed:
    """Route every sent message; ``fan_in_buffers`` is not modified (touched entries are copied)."""
    routed = Routed(fan_in_buffers=fan_in_buffers)
    copied: set[str] = set()
    touched: list[FanInEdges] = []
    executors = graph.executors
    deliveries = routed.deliveries
    for outcome in outcomes:
        source = outcome.executor_id
        groups = graph.outgoing.get(source, ())
        for message, target_id in outcome.sent:
            targets: list[str] = []
            buffered = False
            for group in groups:
                if isinstance(group, DirectEdge):
                    if (target_id is None or target_id == group.target) and await holds(
                        group.condition, message
                    ):
                        targets.append(group.target)
                elif isinstance(group, FanOutEdges):
                    targets.extend(t for t in group.targets if target_id is None or target_id == t)
                elif isinstance(group, SwitchCaseEdges):
                    for condition, target in group.cases:
                        if await holds(condition, message):
                            if target_id is None or target_id == target:
                                targets.append(target)
                            break
                elif target_id is None or target_id == group.target:  # fan-in
                    if group.target not in copied:  # copy on first write: the committed buffers stay intact
                        if not copied:
                            routed.fan_in_buffers = dict(fan_in_buffers)
                        copied.add(group.target)
                        old = routed.fan_in_buffers.get(group.target, {})
                        routed.fan_in_buffers[group.target] = {k: list(v) for k, v in old.items()}
                    routed.fan_in_buffers[group.target].setdefault(source, []).append(message)
                    if group not in touched:
                        touched.append(group)
                    buffered = True
            for target in targets:
                if executors[target].handler_for(message) is not None:  # can_handle(), one call less
                    deliveries.append(Delivery(target, message, (source,)))
                else:
                    routed.dropped.append(f"{source} -> {target}: no handler for {type(message).__name__}")
            if not targets and not buffered:
                where = f" to {target_id!r}" if target_id is not None else ""
                routed.dropped.append(f"{source}: no edge takes {type(message).__name__}{where}")
    for group in touched:
        buffer = routed.fan_in_buffers[group.target]
        if all(buffer.get(s) for s in group.sources):
            joined = [m for s in group.sources for m in buffer[s]]
            del routed.fan_in_buffers[group.target]
            if executors[group.target].can_handle(joined):
                deliveries.append(Delivery(group.target, joined, group.sources))
            else:
                routed.dropped.append(f"fan-in -> {group.target}: no handler for the joined list")
    return routed
