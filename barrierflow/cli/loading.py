"""Turning command-line text into Python: ``MODULE:FACTORY`` targets, JSON input, ``ID=JSON`` answers."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Iterable
from typing import Any

from barrierflow.engine import WorkflowBuilder
from barrierflow.engine.registry import registered_workflows
from barrierflow.json_io import JsonInputError, from_json, type_name

from .errors import CliError


def _ensure_cwd_importable() -> None:
    """Let ``MODULE`` name a module in the current directory, as ``python -m`` and ``celery -A`` do."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_module(name: str, *, what: str = "module") -> Any:
    """Import ``name`` or raise a ``CliError`` that tells a missing module from one that fails to import."""
    _ensure_cwd_importable()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if name == missing or name.startswith(missing + "."):
            raise CliError(
                f"no {what} named {name!r}: check the spelling, and run from the directory that contains it "
                "(the current directory is importable)"
            ) from exc
        raise CliError(f"importing {what} {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise CliError(f"importing {what} {name!r} failed: {type(exc).__name__}: {exc}") from exc


def import_modules(names: Iterable[str]) -> list[str]:
    """Import each module (for ``--import`` / ``BARRIERFLOW_IMPORTS``); return the names, deduplicated."""
    done: list[str] = []
    for name in names:
        name = name.strip()
        if name and name not in done:
            import_module(name)
            done.append(name)
    return done


def env_imports() -> list[str]:
    return [m.strip() for m in os.environ.get("BARRIERFLOW_IMPORTS", "").split(",") if m.strip()]


def _factories_in(module: Any) -> dict[str, Any]:
    """Workflow factories registered by ``module`` and builders defined in it, by attribute name."""
    found = {}
    for attr, value in vars(module).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, WorkflowBuilder) or (
            callable(value)
            and getattr(value, "__module__", None) == module.__name__
            and any(value is f for f in registered_workflows().values())
        ):
            found[attr] = value
    return found


def workflows_offered(module: Any) -> list[str]:
    """``MODULE:FACTORY`` of every workflow ``module`` defines; for a package without any, its modules' ones.

    Importing a package's modules is what the user asked for by naming the package; one that fails to import
    is left out of the listing (its error shows when it is named).
    """
    found = [f"{module.__name__}:{attr}" for attr in _factories_in(module)]
    if found or not hasattr(module, "__path__"):
        return sorted(found)
    for info in pkgutil.iter_modules(module.__path__, f"{module.__name__}."):
        try:
            submodule = importlib.import_module(info.name)
        except Exception:
            continue
        found += [f"{info.name}:{attr}" for attr in _factories_in(submodule)]
    return sorted(found)


def _no_workflow(module_name: str) -> CliError:
    return CliError(
        f"{module_name!r} defines no workflow (no @register_workflow factory and no WorkflowBuilder at its top "
        "level): pass MODULE:FACTORY, like examples.text_pipeline:text_pipeline"
    )


def load_builder(target: str) -> WorkflowBuilder:
    """``MODULE:FACTORY`` (a factory function or a ``WorkflowBuilder``), validated.

    ``MODULE`` alone works when the module defines exactly one workflow.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise CliError(f"expected MODULE:FACTORY (like examples.text_pipeline:text_pipeline), got {target!r}")
    module = import_module(module_name)
    known = _factories_in(module)
    if not attr:
        if len(known) != 1:
            offered = workflows_offered(module)
            if not offered:
                raise _no_workflow(module_name)
            raise CliError(
                f"say which workflow of {module_name!r} to run, as MODULE:FACTORY; its workflows: "
                + ", ".join(offered)
            )
        attr = next(iter(known))
    try:
        obj = getattr(module, attr)
    except AttributeError:
        offered = workflows_offered(module)
        if not offered:
            raise _no_workflow(module_name) from None
        raise CliError(
            f"module {module_name!r} has no {attr!r}; its workflows: {', '.join(offered)}"
        ) from None
    if isinstance(obj, WorkflowBuilder):
        builder = obj
    elif callable(obj):
        try:
            builder = obj()
        except Exception as exc:
            raise CliError(f"{module_name}:{attr}() raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(builder, WorkflowBuilder):
            raise CliError(f"{module_name}:{attr}() returned {type(builder).__name__}, not a WorkflowBuilder")
    else:
        raise CliError(
            f"{module_name}:{attr} is a {type(obj).__name__}: expected a WorkflowBuilder or a factory "
            "returning one"
        )
    builder.build_graph()  # WorkflowValidationError names the executors at fault
    return builder


def factory_target(workflow_name: str) -> str | None:
    """``MODULE:FACTORY`` of the factory registered under ``workflow_name``, if an imported module has one."""
    factory = registered_workflows().get(workflow_name)
    if factory is None:
        return None
    return f"{factory.__module__}:{factory.__qualname__}"


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        hint = ""
        if what == "--input" and text and text.lstrip()[:1] not in '{["-0123456789tfn':
            hint = f"; a string needs JSON quotes: --input '{json.dumps(text)}'"
        raise CliError(f"{what} is not valid JSON ({exc}): {text!r}{hint}") from None


def read_input(value: str | None) -> Any:
    """The run's input message: JSON text, or ``-`` for JSON on stdin."""
    if value is None:
        return None
    if value == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise CliError("--input - reads JSON from stdin, but stdin was empty")
        return parse_json(text, "--input (stdin)")
    return parse_json(value, "--input")


def parse_responses(items: Iterable[str]) -> dict[str, Any]:
    """``--respond ID=JSON`` options as ``{request_id: value}``."""
    responses: dict[str, Any] = {}
    for item in items:
        request_id, sep, text = item.partition("=")
        if not sep or not request_id.strip():
            raise CliError(f"--respond takes ID=JSON (like --respond 'a1b2=true'), got {item!r}")
        responses[request_id.strip()] = parse_json(text, f"the answer to request {request_id.strip()!r}")
    return responses


def coerce_answer(value: Any, response_type: Any) -> Any:
    """Fit a JSON answer to the type its request asked for (``barrierflow.json_io.from_json``)."""
    try:
        return from_json(value, response_type, "the answer")
    except JsonInputError as exc:
        raise CliError(f"{exc} (the request asked for {type_name(response_type)})") from None


def example_answer(response_type_name: str | None) -> str:
    """A JSON placeholder for an answer of this type, for the printed command."""
    return {
        "bool": "true",
        "str": '"..."',
        "int": "0",
        "float": "0.0",
        "list": "[]",
        "dict": "{}",
    }.get(response_type_name or "", "<JSON>")
