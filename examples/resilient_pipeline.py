"""Retries, a timeout and a sub-workflow: fetch from a flaky service, have a person review, publish.

    barrierflow run examples.resilient_pipeline:resilient_pipeline --input '"https://example.org/flaky"' \
        --instance article-1 --redis redis://localhost:6379/0
    # fetch fails twice (executor_retry events), then the review asks; the CLI prints the answering command:
    barrierflow run examples.resilient_pipeline:resilient_pipeline --instance article-1 \
        --redis redis://localhost:6379/0 --respond 'a1b2c3d4e5f60718=true'
    python -m examples.resilient_pipeline     # scripted: a flaky and a hanging fetch, both reviewed

::

    fetch --Article--> review [ summarise --Draft--> ask --request_info(ReviewRequest, bool)--> (a person) ]
                          |  <-- the answer goes into the sub-workflow execution that asked --
                          +--Verdict--> publish --> output

``fetch`` calls a service that fails now and then: its ``RetryPolicy`` tries again with exponential backoff
(``executor_retry`` events say why and how long it waits), and its ``timeout`` cuts off an attempt that hangs
(which then counts as one more failed attempt). A failed attempt leaves nothing behind. ``review`` is a whole
workflow used as one executor (``WorkflowExecutor``): each article starts an execution of it; its question to
the reviewer becomes a pending request of this workflow, and the answer continues that execution, whose
output (a ``Verdict``) is sent on to ``publish``.

The service is simulated (``FlakyService``), so the example runs anywhere: the URL says how it behaves.
``.../flaky`` fails twice, ``.../slow`` hangs on its first call, ``.../down`` always fails (the run fails after
``Fetch.retry.max_attempts`` attempts), anything else answers at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from barrierflow.engine import (
    Executor,
    RetryPolicy,
    RunState,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    executor,
    handler,
    register_type,
    register_workflow,
    response_handler,
)


@register_type(name="examples.resilient_pipeline.Article")
@dataclass(slots=True)
class Article:
    url: str
    title: str
    text: str


@register_type(name="examples.resilient_pipeline.Draft")
@dataclass(slots=True)
class Draft:
    title: str
    summary: str


@register_type(name="examples.resilient_pipeline.ReviewRequest")
@dataclass(slots=True)
class ReviewRequest:
    """What the reviewer is asked; it waits in the parent's checkpoint as a pending request."""

    title: str
    summary: str
    question: str = "Publish this article? (true = publish, false = reject)"


@register_type(name="examples.resilient_pipeline.Verdict")
@dataclass(slots=True)
class Verdict:
    title: str
    approved: bool


class FlakyService:
    """Stands in for a remote API that misbehaves as its URL says; calls are counted per caller and URL."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}

    async def fetch(self, url: str, caller: str) -> Article:
        key = (caller, url)
        call = self.calls[key] = self.calls.get(key, 0) + 1
        if url.endswith("/down") or (url.endswith("/flaky") and call <= 2):
            raise ConnectionError(f"{url}: connection reset (call {call})")
        if url.endswith("/slow") and call == 1:
            await asyncio.sleep(3600)  # hangs: only the timeout gets the run out of here
        name = url.rstrip("/").rsplit("/", 1)[-1]
        return Article(url, name.capitalize(), f"All about {name}. It is a fine thing. Read on.")


SERVICE = FlakyService()


class Fetch(Executor):
    """Fetches the article; retried on connection errors and timeouts, at most 0.5 s per attempt."""

    retry = RetryPolicy(
        max_attempts=4, initial_backoff=0.05, max_backoff=1.0, retry_on=(ConnectionError, TimeoutError)
    )
    timeout = 0.5

    @handler
    async def on_url(self, url: str, ctx: WorkflowContext[Article]) -> None:
        await ctx.send_message(await SERVICE.fetch(url, caller=ctx.instance_id))


# -- the review sub-workflow ------------------------------------------------------------------------------------


@executor(id="summarise")
async def summarise(article: Article, ctx: WorkflowContext[Draft]) -> None:
    await ctx.send_message(Draft(article.title, article.text.split(".")[0] + "."))


class AskReviewer(Executor):
    @handler
    async def on_draft(self, draft: Draft, ctx: WorkflowContext) -> None:
        await ctx.request_info(
            ReviewRequest(draft.title, draft.summary), bool, request_id=f"review-{draft.title}"
        )

    @response_handler
    async def on_answer(self, original_request: ReviewRequest, approved: bool, ctx: WorkflowContext) -> None:
        await ctx.yield_output(Verdict(original_request.title, approved))  # sent on by the parent


def review_flow() -> WorkflowBuilder:
    ask = AskReviewer(id="ask")
    return WorkflowBuilder(name="review", start_executor=summarise).add_edge(summarise, ask)


# -- the pipeline -----------------------------------------------------------------------------------------------


@executor(id="publish")
async def publish(verdict: Verdict, ctx: WorkflowContext) -> None:
    await ctx.yield_output(f"{'published' if verdict.approved else 'rejected'}: {verdict.title}")


@register_workflow
def resilient_pipeline() -> WorkflowBuilder:
    fetch = Fetch(id="fetch")
    review = WorkflowExecutor(review_flow(), id="review")
    return WorkflowBuilder(name="resilient_pipeline", start_executor=fetch).add_chain(
        [fetch, review, publish]
    )


async def run(url: str, approve: bool = True) -> tuple[list[str], list[str]]:
    """Fetch ``url``, answer the review with ``approve``; returns (outputs, what the retries said)."""
    wf = resilient_pipeline().build()
    result = await wf.run(url)
    retries = [
        f"attempt {e.details['attempt']} failed ({e.details['error_type']}), next in {e.details['delay']:.2f} s"
        for e in result.events
        if e.type == "executor_retry" and e.details
    ]
    while result.status is RunState.IDLE_WITH_PENDING_REQUESTS:
        result = await wf.run(responses=dict.fromkeys(result.pending_requests, approve))
    return result.outputs, retries


def main() -> None:
    for url in ("https://example.org/flaky", "https://example.org/slow"):
        outputs, retries = asyncio.run(run(url))
        print(f"{url}: {'; '.join(retries)} -> {outputs[-1]}")


if __name__ == "__main__":
    main()
