"""Workflow definitions by name, so a worker process can rebuild the graph a coordinator runs.

A definition is a factory returning a ``WorkflowBuilder``; its key is the builder's ``name``. Workers import
the modules listed in ``BARRIERFLOW_IMPORTS``, whose ``@register_workflow`` decorators fill this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import WorkflowError

if TYPE_CHECKING:
    from .builder import WorkflowBuilder
    from .graph import Graph

Factory = Callable[[], "WorkflowBuilder"]
_factories: dict[str, Factory] = {}


def register_workflow(factory: Factory) -> Factory:
    """Decorator: register a ``WorkflowBuilder`` factory under the builder's ``name``."""
    name = factory().name
    known = _factories.get(name)
    if known is not None and getattr(known, "__qualname__", None) != getattr(factory, "__qualname__", None):
        raise WorkflowError(f"two workflow factories are registered as {name!r}: {known!r} and {factory!r}")
    _factories[name] = factory
    return factory


def workflow_factory(name: str) -> Factory:
    """The factory registered as ``name`` (``WorkflowError`` listing the known names otherwise)."""
    try:
        return _factories[name]
    except KeyError:
        known = ", ".join(sorted(_factories)) or "none"
        raise WorkflowError(
            f"no workflow registered as {name!r} (known: {known}); list its module in BARRIERFLOW_IMPORTS"
        ) from None


def registered_workflows() -> dict[str, Factory]:
    return dict(_factories)


_graphs: dict[str, tuple[Factory, Graph]] = {}


def workflow_graph(name: str) -> Graph:
    """The validated graph of the workflow registered as ``name``, built once per factory.

    Hosts that run many instances of one workflow (the run queue's coordinators) share it: a ``Graph`` is
    immutable and holds no run state (executors keep theirs in the instance, see DESIGN §2).
    """
    factory = workflow_factory(name)
    known = _graphs.get(name)
    if known is None or known[0] is not factory:
        known = _graphs[name] = (factory, factory().build_graph())
    return known[1]
