"""``barrierflow.testing``: what its fixtures catch that an in-process run does not, as a Celery worker would.

(The examples run through them in ``tests/test_examples.py``; the plugin in an install without fakeredis is
checked in ``tests/test_wheel.py``; the README's "Testing your workflows" file runs in ``tests/test_readme.py``.)
"""

from __future__ import annotations

import pytest

from barrierflow import (
    Executor,
    GraphSignatureMismatchError,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowError,
    executor,
    handler,
    register_workflow,
)


class Greeter(Executor):
    def __init__(self, id: str, greeting: str) -> None:
        super().__init__(id)
        self.greeting = greeting

    @handler
    async def on_name(self, name: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{self.greeting}, {name}")


@executor(id="shout")
async def shout(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(text.upper())


@register_workflow
def greeting_flow() -> WorkflowBuilder:
    return WorkflowBuilder(name="bftest_greeting", start_executor=Greeter("greet", greeting="hello"))


async def test_a_workflow_that_is_not_registered_cannot_run_on_a_worker(
    barrierflow_store, barrierflow_dispatcher
) -> None:
    adhoc = WorkflowBuilder(name="bftest_adhoc", start_executor=shout)
    assert (await adhoc.build().run("in process")).outputs == ["IN PROCESS"]

    wf = adhoc.build(store=barrierflow_store, dispatcher=barrierflow_dispatcher)
    with pytest.raises(WorkflowError, match=r"no workflow registered as 'bftest_adhoc'.*BARRIERFLOW_IMPORTS"):
        await wf.run("on a worker")
    assert wf.status is RunState.FAILED


async def test_a_worker_runs_the_registered_factorys_executors_not_the_tests_objects(
    barrierflow_store, barrierflow_dispatcher
) -> None:
    """Executors configured differently from the registered factory are not what a worker would run."""
    tweaked = WorkflowBuilder(name="bftest_greeting", start_executor=Greeter("greet", greeting="hi"))
    assert (await tweaked.build().run("ada")).outputs == ["hi, ada"]
    wf = tweaked.build(store=barrierflow_store, dispatcher=barrierflow_dispatcher)
    assert (await wf.run("ada")).outputs == ["hello, ada"]


async def test_a_graph_other_than_the_registered_one_is_refused(
    barrierflow_store, barrierflow_dispatcher
) -> None:
    greet = Greeter("greet", greeting="hello")
    other = WorkflowBuilder(name="bftest_greeting", start_executor=greet).add_edge(greet, shout)
    wf = other.build(store=barrierflow_store, dispatcher=barrierflow_dispatcher)
    with pytest.raises(GraphSignatureMismatchError, match="graph signature"):
        await wf.run("ada")


async def test_each_test_gets_an_empty_store(barrierflow_store) -> None:
    assert await barrierflow_store.latest_id("anything") is None
    await greeting_flow().build(instance_id="anything", store=barrierflow_store).run("x")
    assert await barrierflow_store.latest_id("anything") is not None


async def test_and_the_next_one_too(barrierflow_store) -> None:
    assert await barrierflow_store.latest_id("anything") is None
