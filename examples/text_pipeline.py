"""The smallest workflow: ``upper -> reverse`` (the README's first command; docs/design.md runs it distributed).

    barrierflow run examples.text_pipeline:text_pipeline --input '"hello"'
    python -m examples.text_pipeline hello

Superstep 1 delivers the input to ``upper``, which sends the upper-cased text on; superstep 2 delivers it to
``reverse``, which yields the workflow's one output: ``"OLLEH"``.
"""

from __future__ import annotations

import asyncio
import sys

from barrierflow.engine import (
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    register_workflow,
)


class Upper(Executor):
    """A class executor: upper-cases the text and sends it along its outgoing edge."""

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
        await ctx.send_message(text.upper())


@executor(id="reverse")
async def reverse(text: str, ctx: WorkflowContext) -> None:
    """A function executor: the end of the chain, so it yields the workflow output."""
    await ctx.yield_output(text[::-1])


@register_workflow
def text_pipeline() -> WorkflowBuilder:
    upper = Upper(id="upper")
    return WorkflowBuilder(name="text_pipeline", start_executor=upper).add_edge(upper, reverse)


async def run(text: str) -> list[str]:
    result = await text_pipeline().build().run(text)
    return result.outputs


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    text = " ".join(args) or "hello"
    for output in asyncio.run(run(text)):
        print(output)


if __name__ == "__main__":
    main()
