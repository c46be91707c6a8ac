"""One import namespace: ``barrierflow`` and its sub-packages, nothing generic at the top level.

A user project with its own ``engine``/``broker``/``workers`` packages must work beside barrierflow, whichever
is imported first, and embedded use must never load redis or celery (the facade binds them lazily).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import barrierflow

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "redis",
    "celery",
    "kombu",
    "fakeredis",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "barrierflow.broker",
    "barrierflow.workers",
    "barrierflow.server",
)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: the import state of this test process must not leak into it."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_embedded_use_and_the_cli_never_import_redis_celery_or_the_server(tmp_path: Path) -> None:
    result = _python(
        f"""
        import asyncio, json, sys
        import barrierflow
        import barrierflow.testing  # the pytest plugin is loaded by every pytest run: it must stay light
        from barrierflow import WorkflowBuilder, WorkflowContext, executor

        @executor(id="echo")
        async def echo(text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(text)

        result = asyncio.run(WorkflowBuilder(name="w", start_executor=echo).build().run("hi"))
        assert result.outputs == ["hi"], result.outputs

        from typer.testing import CliRunner
        from barrierflow.cli.main import app
        ran = CliRunner().invoke(app, ["run", "examples.text_pipeline:text_pipeline", "--input", '"abc"'])
        assert ran.exit_code == 0, ran.output
        print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))
        """,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_the_distributed_names_are_bound_on_first_use() -> None:
    from barrierflow.broker import RedisStore
    from barrierflow.workers import CeleryDispatcher

    assert barrierflow.RedisStore is RedisStore
    assert barrierflow.CeleryDispatcher is CeleryDispatcher
    for name in barrierflow._LAZY:
        assert name in barrierflow.__all__
        assert name in dir(barrierflow)
        assert getattr(barrierflow, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        barrierflow.Nope  # noqa: B018


def test_type_checkers_see_every_lazy_name() -> None:
    """The ``TYPE_CHECKING`` imports and the lazy table name the same things from the same modules."""
    tree = ast.parse((ROOT / "barrierflow" / "__init__.py").read_text())
    [block] = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    ]
    seen = {alias.asname or alias.name: node.module for node in block.body for alias in node.names}
    assert seen == barrierflow._LAZY


def test_engine_names_are_the_facade_names() -> None:
    import barrierflow.engine as engine

    for name in engine.__all__:
        assert getattr(barrierflow, name) is getattr(engine, name)


USER_PACKAGES = {
    "engine/__init__.py": 'WHO = "the user\'s engine"\n',
    "broker/__init__.py": 'WHO = "the user\'s broker"\n',
    "workers/__init__.py": 'WHO = "the user\'s workers"\n',
    "myflow.py": """
        import engine
        from barrierflow import WorkflowBuilder, WorkflowContext, executor, register_workflow

        @executor(id="tag")
        async def tag(text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(f"{text} via {engine.WHO}")

        @register_workflow
        def myflow() -> WorkflowBuilder:
            return WorkflowBuilder(name="myflow", start_executor=tag)
    """,
}


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A project that has its own top-level ``engine``, ``broker`` and ``workers`` packages."""
    for name, text in USER_PACKAGES.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


@pytest.mark.parametrize(
    "imports",
    [
        "import engine, broker, workers; import myflow; import barrierflow.workers",
        "import barrierflow.workers, barrierflow.broker; import myflow; import engine, broker, workers",
    ],
    ids=["the-user's-first", "barrierflow's-first"],
)
def test_a_user_package_named_engine_works_beside_barrierflow(user_project: Path, imports: str) -> None:
    result = _python(
        f"""
        import asyncio, sys
        {imports}
        import barrierflow.engine
        assert engine.WHO == "the user's engine" and broker.WHO == "the user's broker", engine
        assert workers.WHO == "the user's workers", workers
        assert barrierflow.engine.WorkflowBuilder is myflow.WorkflowBuilder
        print(asyncio.run(myflow.myflow().build().run("hello")).outputs[0])
        """,
        cwd=user_project,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello via the user's engine"


def test_the_cli_runs_a_workflow_of_a_project_with_its_own_engine(user_project: Path) -> None:
    from tests.cli.conftest import barrierflow_argv

    result = subprocess.run(
        [*barrierflow_argv(), "run", "myflow:myflow", "--input", '"hi"', "--json"],
        cwd=user_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["outputs"] == ["hi via the user's engine"]
