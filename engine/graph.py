"""The validated, immutable graph a ``Workflow`` runs: executors, edge groups, and the graph signature."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    """A hash of the graph's shape: executor ids, kinds and handler types, the edges, and sub-workflows' graphs.

    Checkpoints and worker tasks carry it, so state made by one graph is never run by a different one. A
    ``WorkflowExecutor`` adds its child graph's signature (its state holds child state of that shape).
    """
    shape = {
        "start": start_id,
        "executors": sorted(_executor_shape(eid, ex) for eid, ex in executors.items()),
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


def _executor_shape(executor_id: str, executor: Executor) -> list[Any]:
    kind = (
        f"fn:{executor._func.__qualname__}"
        if isinstance(executor, FunctionExecutor)
        else type(executor).__qualname__
    )
    shape = [executor_id, kind, sorted(_type_name(s.message_type) for s in executor.handler_specs)]
    subgraph = getattr(executor, "subgraph", None)
    if subgraph is not None:  # only then: graphs without sub-workflows keep the signatures they always had
        shape.append(subgraph.signature)
    return shape


def mermaid(graph: Graph) -> str:
    """A Mermaid flowchart of the graph (``flowchart TD``); node ids are stable across processes.

    A sub-workflow is drawn as a subgraph holding its child graph; edges to and from it attach to the subgraph.
    """
    lines = ["flowchart TD"]
    _mermaid_body(graph, "", "  ", lines)
    return "\n".join(lines)


def _mermaid_body(graph: Graph, prefix: str, indent: str, lines: list[str]) -> None:
    node = {eid: f"{prefix}n{i}" for i, eid in enumerate(graph.executors)}
    for eid, executor in graph.executors.items():
        label = eid.replace('"', "'")
        subgraph = getattr(executor, "subgraph", None)
        if subgraph is not None:
            lines.append(f'{indent}subgraph {node[eid]} ["{label}"]')
            _mermaid_body(subgraph, f"{node[eid]}_", indent + "  ", lines)
            lines.append(f"{indent}end")
        elif eid == graph.start_id:
            lines.append(f'{indent}{node[eid]}[["{label}"]]')
        else:
            lines.append(f'{indent}{node[eid]}["{label}"]')
    for group in graph.groups:
        if isinstance(group, FanInEdges):
            lines.extend(f"{indent}{node[s]} -- fan-in --> {node[group.target]}" for s in group.sources)
        elif isinstance(group, SwitchCaseEdges):
            for i, (condition, target) in enumerate(group.cases):
                label = f"case {i}" if condition is not None else "default"
                lines.append(f"{indent}{node[group.source]} -- {label} --> {node[target]}")
        elif isinstance(group, DirectEdge):
            arrow = " -. conditional .-> " if group.condition is not None else " --> "
            lines.append(f"{indent}{node[group.source]}{arrow}{node[group.target]}")
        else:
            lines.extend(f"{indent}{node[group.source]} -- fan-out --> {node[t]}" for t in group.targets)
