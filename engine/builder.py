"""``WorkflowBuilder``: declare executors and edges, then ``build()`` a validated ``Workflow``."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .edges import Case, Condition, Default, DirectEdge, EdgeGroup, FanInEdges, FanOutEdges, SwitchCaseEdges
from .errors import WorkflowValidationError
from .executor import Executor
from .graph import Graph, graph_signature
from .retry import DeliveryPolicy, RetryPolicy, check_retry, check_timeout, resolve
from .typing_utils import accepts

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .store import Store
    from .workflow import Workflow

ExecutorRef = Executor | str


class WorkflowBuilder:
    """Collects executors and edge groups; ``build()`` checks the graph and returns a ``Workflow`` handle."""

    def __init__(
        self,
        name: str = "workflow",
        start_executor: ExecutorRef | None = None,
        max_supersteps: int = 100,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ):
        """``retry`` and ``timeout`` are the defaults of every executor that does not set its own."""
        if not isinstance(name, str):
            raise TypeError(
                f"WorkflowBuilder's first argument is the workflow's name, not {name!r}: "
                "pass the start executor as WorkflowBuilder(name=..., start_executor=...)"
            )
        self.name = name
        self._start = start_executor
        self.max_supersteps = max_supersteps
        self.retry = retry
        self.timeout = timeout
        self._executors: dict[str, Executor] = {}
        self._duplicates: list[str] = []
        self._groups: list[EdgeGroup] = []
        self._problems: list[str] = []
        if isinstance(start_executor, Executor):
            self._add(start_executor)

    # -- declaring ------------------------------------------------------------------------------------------

    def set_start_executor(self, executor: ExecutorRef) -> WorkflowBuilder:
        self._start = executor
        if isinstance(executor, Executor):
            self._add(executor)
        return self

    def add_executor(self, executor: Executor) -> WorkflowBuilder:
        self._add(executor)
        return self

    def add_edge(
        self, source: ExecutorRef, target: ExecutorRef, condition: Condition | None = None
    ) -> WorkflowBuilder:
        """A direct edge; with ``condition(message) -> bool`` (sync or async) only matching messages pass."""
        self._groups.append(DirectEdge(self._ref(source), self._ref(target), condition))
        return self

    def add_fan_out_edges(self, source: ExecutorRef, targets: Sequence[ExecutorRef]) -> WorkflowBuilder:
        """Broadcast every message of ``source`` to all ``targets``, in this order."""
        if len(targets) < 2:
            self._problems.append(f"fan-out from {self._ref(source)!r} needs at least two targets")
        self._groups.append(FanOutEdges(self._ref(source), tuple(self._ref(t) for t in targets)))
        return self

    def add_fan_in_edges(self, sources: Sequence[ExecutorRef], target: ExecutorRef) -> WorkflowBuilder:
        """``target`` gets one ``list`` once every source has sent: messages of the first source, then the next."""
        if len(sources) < 2:
            self._problems.append(f"fan-in into {self._ref(target)!r} needs at least two sources")
        self._groups.append(FanInEdges(tuple(self._ref(s) for s in sources), self._ref(target)))
        return self

    def add_switch_case_edge_group(
        self, source: ExecutorRef, cases: Sequence[Case | Default]
    ) -> WorkflowBuilder:
        """The first ``Case`` whose condition holds takes the message; otherwise the ``Default`` (last, once)."""
        source_id = self._ref(source)
        defaults = [i for i, c in enumerate(cases) if isinstance(c, Default)]
        bad = [c for c in cases if not isinstance(c, (Case, Default))]
        if bad:
            self._problems.append(f"switch from {source_id!r}: {bad[0]!r} is neither a Case nor a Default")
        elif not cases:
            self._problems.append(f"switch from {source_id!r} has no cases")
        elif len(defaults) != 1 or defaults[0] != len(cases) - 1:
            self._problems.append(f"switch from {source_id!r} needs exactly one Default, as its last case")
        entries = tuple(
            (c.condition if isinstance(c, Case) else None, self._ref(c.target))
            for c in cases
            if isinstance(c, (Case, Default))
        )
        self._groups.append(SwitchCaseEdges(source_id, entries))
        return self

    def add_chain(self, executors: Sequence[ExecutorRef]) -> WorkflowBuilder:
        """Direct edges ``a -> b -> c ...``."""
        for source, target in itertools.pairwise(executors):
            self.add_edge(source, target)
        if len(executors) == 1:
            self._ref(executors[0])
        return self

    def _add(self, executor: Executor) -> None:
        known = self._executors.get(executor.id)
        if known is None:
            self._executors[executor.id] = executor
        elif known is not executor and executor.id not in self._duplicates:
            self._duplicates.append(executor.id)

    def _ref(self, ref: Any) -> str:
        if isinstance(ref, Executor):
            self._add(ref)
            return ref.id
        if isinstance(ref, str):
            return ref
        raise TypeError(f"expected an Executor or an executor id, got {ref!r}")

    # -- building -------------------------------------------------------------------------------------------

    def build(
        self, instance_id: str | None = None, store: Store | None = None, dispatcher: Dispatcher | None = None
    ) -> Workflow:
        """Validate the graph and return a handle on instance ``instance_id`` (a new one when omitted).

        Over a store that already holds checkpoints of ``instance_id``, the handle continues from the latest.
        """
        from .dispatch import LocalDispatcher
        from .memory_store import MemoryStore
        from .workflow import Workflow

        graph = self.build_graph()
        return Workflow(
            graph,
            instance_id=instance_id if instance_id is not None else uuid.uuid4().hex,
            store=store if store is not None else MemoryStore(),
            dispatcher=dispatcher if dispatcher is not None else LocalDispatcher(),
        )

    def build_graph(self) -> Graph:
        """Validate and freeze the graph (``WorkflowValidationError`` names the executors at fault)."""
        problems = list(self._problems)
        if self._duplicates:
            problems.append(f"duplicate executor ids: {', '.join(map(repr, self._duplicates))}")
        if self._start is None:
            problems.append("no start executor: pass start_executor= to WorkflowBuilder")
            raise WorkflowValidationError("; ".join(problems))
        start_id = self._ref(self._start)
        referenced = {start_id} | {eid for g in self._groups for eid in (*g.sources, *g.targets)}
        unknown = sorted(referenced - self._executors.keys())
        if unknown:
            problems.append(
                f"unknown executors (referenced by id, never added): {', '.join(map(repr, unknown))}"
            )
        if not isinstance(self.max_supersteps, int) or self.max_supersteps < 1:
            problems.append(f"max_supersteps must be a positive integer, not {self.max_supersteps!r}")
        problems.extend(self._duplicate_edges())
        policies = self._policies(problems)
        fan_in_targets = [g.target for g in self._groups if isinstance(g, FanInEdges)]
        twice = sorted({t for t in fan_in_targets if fan_in_targets.count(t) > 1})
        if twice:
            problems.append(f"executors joined by more than one fan-in group: {', '.join(map(repr, twice))}")
        if not unknown:
            problems.extend(self._type_problems())
            unreachable = self._unreachable(start_id)
            if unreachable:
                problems.append(
                    f"executors unreachable from start executor {start_id!r}: {', '.join(map(repr, unreachable))}"
                )
        if problems:
            raise WorkflowValidationError(f"workflow {self.name!r} is invalid: " + "; ".join(problems))
        groups = tuple(self._groups)
        outgoing: dict[str, list[EdgeGroup]] = {}
        for group in groups:
            for source in group.sources:
                outgoing.setdefault(source, []).append(group)
        return Graph(
            name=self.name,
            start_id=start_id,
            executors=dict(self._executors),
            groups=groups,
            max_supersteps=self.max_supersteps,
            outgoing={k: tuple(v) for k, v in outgoing.items()},
            fan_in={g.target: g for g in groups if isinstance(g, FanInEdges)},
            signature=graph_signature(start_id, self._executors, groups),
            policies=policies,
        )

    def _policies(self, problems: list[str]) -> dict[str, DeliveryPolicy]:
        """Each executor's retries and timeout: its own, else this builder's defaults (checked here)."""
        before = len(problems)
        for owner, retry, timeout in [
            (f"workflow {self.name!r}", self.retry, self.timeout),
            *((f"executor {e.id!r}", e.retry, e.timeout) for e in self._executors.values()),
        ]:
            try:
                check_retry(retry, owner)
                check_timeout(timeout, owner)
            except WorkflowValidationError as exc:
                problems.append(str(exc))
        if len(problems) > before:
            return {}
        policies = {}
        for executor_id, executor in self._executors.items():
            policy = resolve(executor.retry, executor.timeout, self.retry, self.timeout)
            if policy is not None:
                policies[executor_id] = policy
        return policies

    def _duplicate_edges(self) -> list[str]:
        """Edges that would deliver every message twice: the same direct edge added again, a repeated target."""
        problems, seen = [], set()
        for group in self._groups:
            if isinstance(group, DirectEdge):
                pair = (group.source, group.target)
                if pair in seen:
                    problems.append(f"duplicate edge {group.source!r} -> {group.target!r}")
                seen.add(pair)
            elif isinstance(group, (FanOutEdges, FanInEdges)):
                ends = group.targets if isinstance(group, FanOutEdges) else group.sources
                repeated = sorted({e for e in ends if ends.count(e) > 1})
                if repeated:
                    problems.append(
                        f"{group.kind} group lists {', '.join(map(repr, repeated))} more than once"
                    )
        return problems

    def _unreachable(self, start_id: str) -> list[str]:
        seen, frontier = {start_id}, [start_id]
        while frontier:
            current = frontier.pop()
            for group in self._groups:
                if current in group.sources:
                    for target in group.targets:
                        if target not in seen:
                            seen.add(target)
                            frontier.append(target)
        return [eid for eid in self._executors if eid not in seen]

    def _type_problems(self) -> list[str]:
        """Edges whose declared message types no handler of the target can take."""
        problems = []
        for group in self._groups:
            for source in group.sources:
                produced = _declared_outputs(self._executors[source])
                if produced is None:
                    continue
                for target in group.targets:
                    executor = self._executors[target]
                    wanted = [s.message_type for s in executor.handler_specs]
                    if isinstance(group, FanInEdges):
                        ok = any(accepts(w, list[p]) for w in wanted for p in produced)  # type: ignore[valid-type]
                    else:
                        ok = any(accepts(w, p) for w in wanted for p in produced)
                    if wanted and produced and not ok:
                        names = ", ".join(getattr(p, "__name__", repr(p)) for p in produced)
                        problems.append(
                            f"edge {source!r} -> {target!r}: {source!r} sends {names} but {target!r} "
                            f"handles {', '.join(getattr(w, '__name__', repr(w)) for w in wanted)}"
                        )
        return problems


def _declared_outputs(executor: Executor) -> tuple[Any, ...] | None:
    """Union of the message types an executor's handlers declare; ``None`` if any handler is undeclared."""
    produced: list[Any] = []
    for spec in (*executor.handler_specs, *executor.response_handler_specs):
        if spec.output_types is None:
            return None
        produced.extend(spec.output_types)
    return tuple(produced)
