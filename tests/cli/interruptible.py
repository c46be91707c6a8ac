"""A workflow whose sync handler blocks for a minute, for the Ctrl-C test (``tests/cli/test_cli_interrupt.py``).

The handler touches the file named by ``BFTEST_STARTED`` when it starts, so the test knows when to interrupt.
"""

from __future__ import annotations

import os
import pathlib
import time

from barrierflow.engine import WorkflowBuilder, WorkflowContext, executor


@executor(id="blocking")
def blocking(seconds: int, ctx: WorkflowContext) -> None:
    pathlib.Path(os.environ["BFTEST_STARTED"]).touch()
    time.sleep(seconds)  # a sync handler: it runs on a handler thread
    ctx.yield_output(seconds)


def interruptible() -> WorkflowBuilder:
    return WorkflowBuilder(name="interruptible", start_executor=blocking)
