"""Spans of in-process runs (an in-memory exporter), and what tracing costs when it is off: nothing imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from barrierflow.engine import ExecutorFailedError, WorkflowBuilder, WorkflowContext, executor
from barrierflow.engine.registry import workflow_factory
from barrierflow.engine.tracing import tracer
from tests.observability.conftest import as_records, children, named
from tests.observability_flows import job


async def test_span_tree_of_a_run_with_retries(spans) -> None:
    wf = workflow_factory("obs_flaky")().build()
    result = await wf.run(job("tree", fail=2))
    assert result.outputs == [["left:tree", "right:tree"]]
    records = as_records(spans.get_finished_spans())

    [run] = named(records, "barrierflow.run")
    assert run["parent_id"] is None
    assert run["attributes"]["barrierflow.run_id"] == result.run_id
    assert run["attributes"]["barrierflow.instance_id"] == wf.instance_id
    assert run["attributes"]["barrierflow.workflow"] == "obs_flaky"
    steps = children(records, run, "barrierflow.superstep")
    assert [s["attributes"]["barrierflow.superstep"] for s in steps] == [1, 2, 3]
    # the superstep-0 checkpoint is written under the run, each barrier's under its superstep
    assert len(children(records, run, "barrierflow.checkpoint.write")) == 1
    for step in steps:
        [write] = children(records, step, "barrierflow.checkpoint.write")
        assert write["attributes"]["barrierflow.bytes"] > 0
        assert write["attributes"]["barrierflow.events"] >= 2  # checkpoint_created, superstep_completed
    assert [s["attributes"]["barrierflow.deliveries"] for s in steps] == [1, 2, 1]

    [fetch] = children(records, steps[0], "barrierflow.deliver")
    assert fetch["attributes"]["barrierflow.executor_id"] == "fetch"
    attempts = children(records, fetch, "barrierflow.handler")  # one span per attempt
    assert [a["attributes"]["barrierflow.attempt"] for a in attempts] == [1, 2, 3]
    assert [a["status"] for a in attempts] == ["ERROR", "ERROR", "UNSET"]
    second = children(records, steps[1], "barrierflow.deliver")
    assert sorted(d["attributes"]["barrierflow.executor_id"] for d in second) == ["left", "right"]
    for deliver in second:  # the sync handler (right) too, on its handler thread
        [attempt] = children(records, deliver, "barrierflow.handler")
        assert attempt["attributes"]["barrierflow.superstep"] == 2
        assert attempt["attributes"]["barrierflow.run_id"] == result.run_id
    assert {r["trace_id"] for r in records} == {run["trace_id"]}


async def test_a_failed_run_marks_its_spans(spans) -> None:
    wf = workflow_factory("obs_flaky")().build()
    with pytest.raises(ExecutorFailedError):
        await wf.run(job("down", fail=5))
    records = as_records(spans.get_finished_spans())
    [run] = named(records, "barrierflow.run")
    [step] = children(records, run, "barrierflow.superstep")
    [deliver] = children(records, step, "barrierflow.deliver")
    assert (run["status"], step["status"], deliver["status"]) == ("ERROR", "ERROR", "ERROR")
    assert len(children(records, deliver, "barrierflow.handler")) == 3


async def test_tracing_off_makes_no_span() -> None:
    assert tracer() is None  # no provider installed: the API's proxy

    @executor(id="only")
    async def only(n: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output(n)

    wf = WorkflowBuilder(name="untraced", start_executor=only).build()
    assert (await wf.run(1)).outputs == [1]


def test_without_opentelemetry_nothing_imports_it(tmp_path) -> None:
    """As if ``barrierflow[otel]`` were not installed: the module cannot be found, runs work, none imports it."""
    script = textwrap.dedent(
        """
        import asyncio, sys

        class NoOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        import tests.observability_flows as flows
        from barrierflow.engine.registry import workflow_factory
        from barrierflow.engine.tracing import tracer
        from barrierflow.broker import RunQueue
        from barrierflow.workers import Coordinator
        import barrierflow.observability

        wf = workflow_factory("obs_flaky")().build()
        result = asyncio.run(wf.run(flows.job("blocked", fail=1)))
        assert result.outputs == [["left:blocked", "right:blocked"]], result.outputs
        assert tracer() is None
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
