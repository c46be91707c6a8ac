"""Engine benchmarks: supersteps/s and deliveries/s in process, with and without stored checkpoints.

Prints one JSON object per line. The engine always encodes a checkpoint per superstep (that is its contract);
"no store" runs use ``DiscardStore``, which accepts the encoded record and keeps nothing, so the difference to
``MemoryStore`` is the cost of storing. Compare figures of one run side by side: this machine is noisy.

    python bench/engine_bench.py [--quick] [--policies]

``policies_never_triggered`` is the throughput with a ``RetryPolicy`` and a timeout on every executor relative to
none (1.0 = free), measured interleaved in one process. ``--policies`` puts them into the other figures too.

``--tracing`` (needs ``barrierflow[otel]``) adds ``tracing_on``: throughput with an OpenTelemetry SDK tracer
provider and a ``BatchSpanProcessor`` (its exporter discards the batches) relative to tracing off, runs
interleaved in one process; and ``spans_per_run`` of each workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from barrierflow.engine import Executor, MemoryStore, RetryPolicy, WorkflowBuilder, WorkflowContext, handler
from barrierflow.engine.checkpoint_format import CheckpointRecord
from barrierflow.engine.instance_state import Changes, Identity, InstanceState, commit
from barrierflow.engine.store import Lease


class DiscardStore(MemoryStore):
    """Keeps the reservation rules but throws records away (isolates the loop from storage)."""

    async def write_record(self, record: CheckpointRecord, lease: Lease | None) -> None:
        return None

    async def latest_id(self, instance_id: str) -> str | None:
        return None


class Relay(Executor):
    @handler
    async def on(self, n: int, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(n)


class Sink(Executor):
    @handler
    async def on(self, n: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output(n)


class Splitter(Executor):
    @handler
    async def on(self, n: int, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(n)


class Join(Executor):
    """Counts rounds in executor state and loops back to the splitter until ``rounds`` are done."""

    def __init__(self, rounds: int) -> None:
        super().__init__("join")
        self.rounds = rounds

    @handler
    async def on(self, items: list[int], ctx: WorkflowContext[int]) -> None:
        done = ctx.get_executor_state(0) + 1
        ctx.set_executor_state(done)
        if done < self.rounds:
            await ctx.send_message(done)
        else:
            await ctx.yield_output(done)


#: A retry policy and a timeout for every executor that never trigger: what merely having them costs.
NEVER_TRIGGERED: dict[str, Any] = {"retry": RetryPolicy(max_attempts=3), "timeout": 30.0}
#: ``--policies``: the main figures with NEVER_TRIGGERED (to compare against another checkout's plain figures)
POLICIES: dict[str, Any] = {}


def chain(length: int, store: Any, policies: dict[str, Any] | None = None) -> Any:
    nodes = [Relay(f"r{i}") for i in range(length - 1)] + [Sink("sink")]
    policies = POLICIES if policies is None else policies
    return (
        WorkflowBuilder(name="chain", start_executor=nodes[0], max_supersteps=length + 5, **policies)
        .add_chain(nodes)
        .build(store=store)
    )


def fan(width: int, rounds: int, store: Any, policies: dict[str, Any] | None = None) -> Any:
    split = Splitter("split")
    workers = [Relay(f"w{i}") for i in range(width)]
    join = Join(rounds)
    policies = POLICIES if policies is None else policies
    return (
        WorkflowBuilder(name="fan", start_executor=split, max_supersteps=rounds * 3 + 5, **policies)
        .add_fan_out_edges(split, workers)
        .add_fan_in_edges(workers, join)
        .add_edge(join, split)
        .build(store=store)
    )


async def timed(make: Any, repeats: int) -> tuple[float, Any]:
    """Best of ``repeats`` runs, after one warm-up run (handler route caches, allocator)."""
    await make().run(0)
    best, result = float("inf"), None
    for _ in range(repeats):
        wf = make()
        t0 = time.perf_counter()
        result = await wf.run(0)
        best = min(best, time.perf_counter() - t0)
    return best, result


async def checkpoint_cost(executors: int, supersteps: int, rotate: bool) -> float:
    """Seconds per commit when one executor's state changes out of ``executors``.

    ``rotate``: a different executor each superstep (the cumulative delta grows and keyframes are cut),
    otherwise always the same one.
    """
    store = MemoryStore(retention=10)
    lease = store.reserve_nowait("inst", "tok", {})
    who = Identity("inst", "bench", "sig", "run", lease)
    state = InstanceState()
    await commit(store, state, Changes(executor_sets={f"e{i}": {"count": 0} for i in range(executors)}), who)
    t0 = time.perf_counter()
    for step in range(supersteps):
        changed = f"e{step % executors}" if rotate else "e0"
        await commit(store, state, Changes(superstep=step, executor_sets={changed: {"count": step}}), who)
    return (time.perf_counter() - t0) / supersteps


async def policies_cost(repeats: int) -> dict[str, float]:
    """Throughput with NEVER_TRIGGERED policies relative to none, runs interleaved in this process (best of)."""
    best: dict[tuple[str, bool], float] = {}
    makers = {
        "chain": lambda p: chain(200, DiscardStore(), p),
        "fan_out_fan_in": lambda p: fan(100, 20, DiscardStore(), p),
    }
    for _ in range(repeats):
        for name, make in makers.items():
            for with_policies in (False, True):
                wf = make(NEVER_TRIGGERED if with_policies else {})
                t0 = time.perf_counter()
                await wf.run(0)
                key = (name, with_policies)
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
    return {name: round(best[(name, False)] / best[(name, True)], 3) for name in makers}


def tracing_switch() -> tuple[Any, Any]:
    """``(turn_on, turn_off)``: install or remove an SDK provider with a ``BatchSpanProcessor`` whose exporter
    discards what it gets (the cost measured is barrierflow's and the SDK's, not an exporter's)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            Discard.exported += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=65536))

    def turn_on() -> None:
        trace._TRACER_PROVIDER = provider  # the API's global, set directly: it may be set only once otherwise

    def turn_off() -> None:
        trace._TRACER_PROVIDER = None  # back to the API's proxy provider: tracing off

    turn_on.provider = provider  # type: ignore[attr-defined]
    return turn_on, turn_off


async def tracing_cost(repeats: int) -> dict[str, Any]:
    """Throughput with tracing on (BatchSpanProcessor) relative to off, interleaved in this process (best of)."""
    turn_on, turn_off = tracing_switch()
    best: dict[tuple[str, bool], float] = {}
    makers = {
        "chain": lambda: chain(200, DiscardStore(), {}),
        "fan_out_fan_in": lambda: fan(100, 20, DiscardStore(), {}),
    }
    spans: dict[str, int] = {}
    for _ in range(repeats):
        for name, make in makers.items():
            for on in (False, True):
                (turn_on if on else turn_off)()
                wf = make()
                t0 = time.perf_counter()
                await wf.run(0)
                key = (name, on)
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
    turn_off()
    turn_on.provider.force_flush()  # type: ignore[attr-defined]
    for name, make in makers.items():  # spans of one run of each
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        memory = InMemorySpanExporter()
        counting = TracerProvider()
        counting.add_span_processor(SimpleSpanProcessor(memory))
        trace._TRACER_PROVIDER = counting
        await make().run(0)
        trace._TRACER_PROVIDER = None
        spans[name] = len(memory.get_finished_spans())
    return {
        **{f"{name}_ratio": round(best[(name, False)] / best[(name, True)], 3) for name in makers},
        **{
            f"{name}_us_per_span": round((best[(name, True)] - best[(name, False)]) / spans[name] * 1e6, 2)
            for name in makers
        },
        "spans_per_run": spans,
    }


async def main(quick: bool, tracing: bool = False) -> None:
    repeats = 3 if quick else 30
    length, width, rounds = 200, 100, 20
    for _ in range(3):  # warm the process up (allocator, caches) before anything is measured
        await chain(length, MemoryStore()).run(0)
        await fan(width, rounds, MemoryStore()).run(0)
    supersteps = length  # one per executor; the input adds the superstep-0 checkpoint
    for label, store_kind in (("no_store", DiscardStore), ("memory_store", MemoryStore)):
        seconds, result = await timed(lambda store_kind=store_kind: chain(length, store_kind()), repeats)
        assert result.outputs == [0]
        print(
            json.dumps(
                {
                    "bench": "chain",
                    "store": label,
                    "executors": length,
                    "seconds": round(seconds, 5),
                    "supersteps_per_s": round(supersteps / seconds),
                }
            )
        )
        seconds, result = await timed(lambda store_kind=store_kind: fan(width, rounds, store_kind()), repeats)
        assert result.outputs == [rounds]
        deliveries = rounds * (width + 2)
        print(
            json.dumps(
                {
                    "bench": "fan_out_fan_in",
                    "store": label,
                    "width": width,
                    "rounds": rounds,
                    "seconds": round(seconds, 5),
                    "deliveries_per_s": round(deliveries / seconds),
                }
            )
        )
    print(json.dumps({"bench": "policies_never_triggered", **await policies_cost(10 if quick else 100)}))
    if tracing:
        print(json.dumps({"bench": "tracing_on", **await tracing_cost(10 if quick else 60)}))
    for rotate in (False, True):
        costs = {}
        for n in (10, 1000):
            costs[n] = min(
                [await checkpoint_cost(n, 300 if quick else 2000, rotate) for _ in range(repeats // 6 + 1)]
            )
        print(
            json.dumps(
                {
                    "bench": "checkpoint_cost_one_changed",
                    "changed": "a different executor each superstep" if rotate else "the same executor",
                    "us_per_commit_10": round(costs[10] * 1e6, 1),
                    "us_per_commit_1000": round(costs[1000] * 1e6, 1),
                    "ratio_1000_vs_10": round(costs[1000] / costs[10], 2),
                }
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    parser.add_argument(
        "--policies",
        action="store_true",
        help="give every executor a RetryPolicy and a timeout that never trigger (what they cost)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also measure tracing on (OpenTelemetry SDK, BatchSpanProcessor) against off",
    )
    args = parser.parse_args()
    if args.policies:
        POLICIES.update(NEVER_TRIGGERED)
    asyncio.run(main(args.quick, args.tracing))
