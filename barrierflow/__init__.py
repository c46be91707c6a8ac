"""barrierflow: superstep (BSP) workflows, in process by default, on Redis and Celery workers when scaled out.

This is the one import package. Everything a workflow author needs is here::

    from barrierflow import WorkflowBuilder, Executor, handler, WorkflowContext, register_workflow

The engine's names are bound eagerly (they import nothing beyond the standard library and msgpack). The
distributed ones (``RedisStore``, ``CeleryDispatcher``, and the run queue's names as they arrive) are bound on
first use through the module's ``__getattr__``, so embedded use never imports redis or celery.

The layers are sub-packages: ``barrierflow.engine`` (model and superstep algorithm), ``barrierflow.broker``
(Redis store), ``barrierflow.workers`` (Celery app, its configuration, the dispatcher), ``barrierflow.cli``
(the ``barrierflow`` command) and ``barrierflow.testing`` (a pytest plugin for users' own workflow tests).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import barrierflow._source_tree  # noqa: F401 - first: from a source checkout, finds the layers at its root
from barrierflow.engine import *  # noqa: F403 - the facade re-exports the engine's public names
from barrierflow.engine import __all__ as _engine_names

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ binds them on first use
    from barrierflow.broker import RedisStore as RedisStore
    from barrierflow.broker import RunQueue as RunQueue
    from barrierflow.workers import CeleryDispatcher as CeleryDispatcher
    from barrierflow.workers import Coordinator as Coordinator

__version__ = "0.1.0"

#: Distributed names and the sub-package that defines each; imported on first access only. A new one is one
#: line here plus its line in the ``TYPE_CHECKING`` block above (tests/test_namespace.py checks they agree).
_LAZY = {
    "RedisStore": "barrierflow.broker",
    "RunQueue": "barrierflow.broker",
    "CeleryDispatcher": "barrierflow.workers",
    "Coordinator": "barrierflow.workers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'barrierflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [*_engine_names, *_LAZY]
