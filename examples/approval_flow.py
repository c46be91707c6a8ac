"""Human in the loop: draft, ask a person to approve, publish, or revise and ask again.

    barrierflow run examples.approval_flow:approval_flow --input '"release notes"' \
        --instance notes-1 --redis redis://localhost:6379/0
    # the run stops waiting; the CLI prints the command that answers, e.g.
    barrierflow run examples.approval_flow:approval_flow --instance notes-1 \
        --redis redis://localhost:6379/0 --respond 'a1b2c3d4e5f60718=true'
    python -m examples.approval_flow          # scripted: rejects once, then approves

::

    writer --Draft--> reviewer --request_info(ApprovalRequest, bool)--> (a person)
       ^                 |  <-- answer: true (publish) / false (revise) --
       +----Revise-------+

``reviewer`` asks with ``ctx.request_info(ApprovalRequest(...), bool)``; the run then ends with status
``IDLE_WITH_PENDING_REQUESTS`` and its checkpoint holds the request, so the answer can come from another
process, hours later. ``run(responses={request_id: True})`` delivers it to ``reviewer``'s ``@response_handler``:
``True`` publishes (the workflow output); ``False`` sends the draft back to ``writer`` for another revision,
until ``MAX_REVISIONS`` is reached and the piece is withdrawn.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from barrierflow.engine import (
    Executor,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    register_type,
    register_workflow,
    response_handler,
)

MAX_REVISIONS = 3


@register_type(name="examples.approval_flow.Draft")
@dataclass(slots=True)
class Draft:
    topic: str
    text: str
    revision: int = 1


@register_type(name="examples.approval_flow.ApprovalRequest")
@dataclass(slots=True)
class ApprovalRequest:
    """What the person is asked. It sits in checkpoints as the pending request until answered."""

    draft: Draft
    question: str = "Publish this draft? (true = publish, false = revise)"


@register_type(name="examples.approval_flow.Revise")
@dataclass(slots=True)
class Revise:
    draft: Draft


@register_type(name="examples.approval_flow.Decision")
@dataclass(slots=True)
class Decision:
    """The workflow output: what happened to the piece, after how many revisions."""

    topic: str
    published: bool
    revision: int
    text: str


def write(topic: str, revision: int) -> str:
    if revision == 1:
        return f"{topic.capitalize()}: a first draft."
    return f"{topic.capitalize()}: revision {revision}, tightened after review."


class Writer(Executor):
    """Drafts a piece about the input topic, and revises it when the reviewer sends it back."""

    @handler
    async def on_topic(self, topic: str, ctx: WorkflowContext[Draft]) -> None:
        if not topic.strip():
            raise ValueError("the topic is empty: give the writer something to write about")
        await ctx.send_message(Draft(topic, write(topic, 1)))

    @handler
    async def on_revise(self, revise: Revise, ctx: WorkflowContext[Draft]) -> None:
        revision = revise.draft.revision + 1
        await ctx.send_message(Draft(revise.draft.topic, write(revise.draft.topic, revision), revision))


class Reviewer(Executor):
    """Asks a person about every draft; acts on the answer in its response handler."""

    @handler
    async def on_draft(self, draft: Draft, ctx: WorkflowContext) -> None:
        await ctx.request_info(ApprovalRequest(draft), bool)

    @response_handler
    async def on_answer(
        self, original_request: ApprovalRequest, approved: bool, ctx: WorkflowContext
    ) -> None:
        draft = original_request.draft
        if approved:
            await ctx.yield_output(Decision(draft.topic, True, draft.revision, draft.text))
        elif draft.revision >= MAX_REVISIONS:
            await ctx.yield_output(Decision(draft.topic, False, draft.revision, draft.text))
        else:
            await ctx.send_message(Revise(draft))


@register_workflow
def approval_flow() -> WorkflowBuilder:
    writer = Writer(id="writer")
    reviewer = Reviewer(id="reviewer")
    return (
        WorkflowBuilder(name="approval_flow", start_executor=writer)
        .add_edge(writer, reviewer)
        .add_edge(reviewer, writer)
    )


def ask(request: ApprovalRequest) -> bool:
    answer = input(f"\n{request.draft.text}\n{request.question} [y/N] ")
    return answer.strip().lower() in ("y", "yes", "true", "1")


async def run(topic: str, answers: list[bool] | None = None) -> Decision:
    """Run to a decision; ``answers`` scripts the person (``None``: ask on the terminal)."""
    wf = approval_flow().build()
    result = await wf.run(topic)
    scripted = list(answers) if answers is not None else None
    while result.status is RunState.IDLE_WITH_PENDING_REQUESTS:
        responses = {}
        for request_id, event in result.pending_requests.items():
            if scripted is None:
                responses[request_id] = ask(event.data)
            else:
                responses[request_id] = scripted.pop(0) if scripted else True
                print(
                    f"revision {event.data.draft.revision}: {'approve' if responses[request_id] else 'reject'}"
                )
        result = await wf.run(responses=responses)
    return result.outputs[-1]


def main() -> None:
    answers = None if sys.stdin.isatty() else [False, True]
    decision = asyncio.run(run("release notes", answers))
    print(
        f"{'published' if decision.published else 'withdrawn'} after {decision.revision} revision(s): {decision.text}"
    )


if __name__ == "__main__":
    main()
