"""The validated, immutable graph a ``Workflow`` runs: executors, edge groups, and the graph signature."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .edges import DirectEdge, EdgeGroup, FanInEdges, SwitchCaseEdges
from .executor import Executor, FunctionExecutor
from .retry import DeliveryPolicy


@dataclass(frozen=True, slots=True)
class Graph:
    name: str
    start_id: str
    executors: Mapping[str, Executor]
    groups: tuple[EdgeGroup, ...]
    max_supersteps: int
    #: edge groups by source id, in declaration order (the routing order)
    outgoing: Mapping[str, tuple[EdgeGroup, ...]] = field(default_factory=dict)
    #: fan-in group by its target id
    fan_in: Mapping[str, FanInEdges] = field(default_factory=dict)
    signature: str = ""
    #: retries and timeouts by executor id (executors with neither are not listed)
    policies: Mapping[str, DeliveryPolicy] = field(default_factory=dict)


def _type_name(annotation: object) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)


def graph_signature(start_id: str, executors: Mapping[str, Executor], groups: tuple[EdgeGroup, ...]) -> str:
    """A hash of the graph's shape: executor ids, kinds and handler types, and the edges.

    Checkpoints and worker tasks carry it, so state made by one graph is never run by a different one.
    """
    shape = {
        "start": start_id,
        "executors": sorted(
            [
                eid,
                type(ex).__qualname__
                if not isinstance(ex, FunctionExecutor)
                else f"fn:{ex._func.__qualname__}",
                sorted(_type_name(s.message_type) for s in ex.handler_specs),
            ]
            for eid, ex in executors.items()
        ),
        "edges": [
            [
                group.kind,
                list(group.sources),
                list(group.targets),
                [c is not None for c, _ in group.cases] if isinstance(group, SwitchCaseEdges) else [],
                isinstance(group, DirectEdge) and group.condition is not None,
            ]
            for group in groups
        ],
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:32]


def mermaid(graph: Graph) -> str:
    """A Mermaid flowchart of the graph (``flowchart TD``); node ids are stable across processes."""
    node = {eid: f"n{i}" for i, eid in enumerate(graph.executors)}
    lines = ["flowchart TD"]
    for eid in graph.executors:
        label = eid.replace('"', "'")
        lines.append(f'  {node[eid]}[["{label}"]]' if eid == graph.start_id else f'  {node[eid]}["{label}"]')
    for group in graph.groups:
        if isinstance(group, FanInEdges):
            lines.extend(f"  {node[s]} -- fan-in --> {node[group.target]}" for s in group.sources)
        elif isinstance(group, SwitchCaseEdges):
            for i, (condition, target) in enumerate(group.cases):
                label = f"case {i}" if condition is not None else "default"
                lines.append(f"  {node[group.source]} -- {label} --> {node[target]}")
        elif isinstance(group, DirectEdge):
            arrow = " -. conditional .-> " if group.condition is not None else " --> "
            lines.append(f"  {node[group.source]}{arrow}{node[group.target]}")
        else:
            lines.extend(f"  {node[group.source]} -- fan-out --> {node[t]}" for t in group.targets)
    return "\n".join(lines)
