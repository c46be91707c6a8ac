"""Fan-out / fan-in: one document, several analysers in parallel, one report.

    barrierflow run examples.document_pipeline:document_pipeline \
        --input '{"title": "Notes", "text": "Workers scale out. Checkpoints make runs resumable."}'
    python -m examples.document_pipeline

::

                 +--> word_count --+
    ingest ------+--> keywords ----+--> report   (report gets list[Analysis], in this source order)
                 +--> summary -----+

Superstep 1: ``ingest`` normalises the input (a ``Document``, a JSON object ``{"title", "text"}`` or a plain
string) and broadcasts it. Superstep 2: the three analysers run concurrently (on different workers when
distributed). Superstep 3: ``report`` receives one list with every analysis and yields a ``Report``.
The title travels through shared workflow state rather than through the messages.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from barrierflow.engine import (
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    register_type,
    register_workflow,
)

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "than",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "without",
    ]
)


@register_type(name="examples.document_pipeline.Document")
@dataclass(slots=True)
class Document:
    title: str
    text: str


@register_type(name="examples.document_pipeline.Analysis")
@dataclass(slots=True)
class Analysis:
    """What one analyser found. ``analyser`` names it; ``result`` is its findings."""

    analyser: str
    result: dict[str, Any]


@register_type(name="examples.document_pipeline.Report")
@dataclass(slots=True)
class Report:
    """The workflow output: every analysis merged into one record."""

    title: str
    words: int
    sentences: int
    keywords: list[str] = field(default_factory=list)
    summary: str = ""
    analysers: list[str] = field(default_factory=list)


def words_of(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z'-]*", text)


def sentences_of(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


class Ingest(Executor):
    """Accepts whatever the caller has and turns it into a ``Document`` for the analysers."""

    @handler
    async def on_document(self, doc: Document, ctx: WorkflowContext[Document]) -> None:
        if not doc.text.strip():
            raise ValueError(f"document {doc.title!r} is empty: there is nothing to analyse")
        ctx.set_state("title", doc.title)
        await ctx.send_message(doc)

    @handler
    async def on_mapping(self, data: dict, ctx: WorkflowContext[Document]) -> None:
        if not isinstance(data.get("text"), str):
            raise ValueError(f'a document object needs a "text" string; got keys {sorted(data)}')
        await self.on_document(Document(str(data.get("title", "untitled")), data["text"]), ctx)

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[Document]) -> None:
        await self.on_document(Document("untitled", text), ctx)


@executor(id="word_count", output=Analysis)
def word_count(doc: Document, ctx: WorkflowContext) -> None:
    """A sync function executor: the context's calls take effect without ``await``."""
    ctx.send_message(
        Analysis("word_count", {"words": len(words_of(doc.text)), "sentences": len(sentences_of(doc.text))})
    )


@executor(id="keywords", output=Analysis)
async def keywords(doc: Document, ctx: WorkflowContext) -> None:
    counts = Counter(w.lower() for w in words_of(doc.text) if w.lower() not in STOPWORDS and len(w) > 2)
    top = [word for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    await ctx.send_message(Analysis("keywords", {"keywords": top}))


@executor(id="summary", output=Analysis)
async def summary(doc: Document, ctx: WorkflowContext) -> None:
    first = sentences_of(doc.text)[:1]
    text = first[0] if first else ""
    await ctx.send_message(Analysis("summary", {"summary": text if len(text) <= 200 else text[:197] + "..."}))


class BuildReport(Executor):
    """The fan-in target: one ``list[Analysis]``, in the order the fan-in group lists its sources."""

    @handler
    async def on_analyses(self, analyses: list[Analysis], ctx: WorkflowContext) -> None:
        found: dict[str, Any] = {}
        for analysis in analyses:
            found.update(analysis.result)
        await ctx.yield_output(
            Report(
                title=ctx.get_state("title", "untitled"),
                words=found.get("words", 0),
                sentences=found.get("sentences", 0),
                keywords=found.get("keywords", []),
                summary=found.get("summary", ""),
                analysers=[a.analyser for a in analyses],
            )
        )


@register_workflow
def document_pipeline() -> WorkflowBuilder:
    ingest = Ingest(id="ingest")
    analysers = [word_count, keywords, summary]
    report = BuildReport(id="report")
    return (
        WorkflowBuilder(name="document_pipeline", start_executor=ingest)
        .add_fan_out_edges(ingest, analysers)
        .add_fan_in_edges(analysers, report)
    )


SAMPLE = Document(
    "barrierflow notes",
    "Barrierflow runs workflows in supersteps. Every superstep ends at a barrier where state is checkpointed. "
    "Workers scale the supersteps out, and checkpoints make every run resumable.",
)


def main() -> None:
    result = asyncio.run(document_pipeline().build().run(SAMPLE))
    for report in result.outputs:
        for key, value in asdict(report).items():
            print(f"{key:>10}: {value}")


if __name__ == "__main__":
    main()
