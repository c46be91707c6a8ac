"""Engine throughput of two checkouts in one process, their runs interleaved: is this branch's engine as fast?

    python bench/engine_ab.py --base /path/to/other/checkout [--head .] [--repeats 40]

Each checkout's ``engine/`` is loaded as a package of its own (the engine imports nothing of barrierflow but
itself, relatively), the same workflows are built on each (``bench/engine_bench.py``'s chain of 200 and
fan-out/fan-in of 100 x 20, on a store that keeps nothing and on ``MemoryStore``), and their runs alternate
base, head, head, base..., so the load of a shared machine falls on both alike. Separate processes measured one
after the other do not compare on a machine whose load changes by the minute; this does.

Prints one JSON line per workload: the best time of each side and ``ratio`` = head / base (1.0 = as fast,
above 1 = the head is slower), and the median of the per-round ratios.
"""

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def load_engine(root: Path, name: str) -> ModuleType:
    """``root/engine`` imported as the package ``name``."""
    package = root / "engine"
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def workloads(engine: ModuleType) -> dict[str, Any]:
    """Makers of fresh workflows on ``engine`` (annotations are evaluated here: no ``__future__`` import)."""
    Executor, handler, WorkflowContext = engine.Executor, engine.handler, engine.WorkflowContext
    MemoryStore = engine.MemoryStore

    class DiscardStore(MemoryStore):
        async def write_record(self, record: Any, lease: Any) -> None:
            return None

        async def latest_id(self, instance_id: str) -> Any:
            return None

    class Relay(Executor):
        @handler
        async def on(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n)

    class Sink(Executor):
        @handler
        async def on(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.yield_output(n)

    class Splitter(Executor):
        @handler
        async def on(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n)

    class Join(Executor):
        def __init__(self, rounds: int) -> None:
            super().__init__(id="join")
            self.rounds = rounds

        @handler
        async def on(self, items: list[int], ctx: WorkflowContext) -> None:
            done = ctx.get_state("round", 0) + 1
            ctx.set_state("round", done)
            if done >= self.rounds:
                await ctx.yield_output(done)
            else:
                await ctx.send_message(done)

    def chain(store: Any) -> Any:
        nodes = [Relay(id=f"r{i}") for i in range(199)] + [Sink(id="sink")]
        return (
            engine.WorkflowBuilder(name="chain", start_executor=nodes[0], max_supersteps=205)
            .add_chain(nodes)
            .build(store=store)
        )

    def fan(store: Any) -> Any:
        split, workers, join = Splitter(id="split"), [Relay(id=f"w{i}") for i in range(100)], Join(20)
        return (
            engine.WorkflowBuilder(name="fan", start_executor=split, max_supersteps=70)
            .add_fan_out_edges(split, workers)
            .add_fan_in_edges(workers, join)
            .add_edge(join, split)
            .build(store=store)
        )

    return {
        "chain/no_store": lambda: chain(DiscardStore()),
        "fan_out_fan_in/no_store": lambda: fan(DiscardStore()),
        "chain/memory_store": lambda: chain(MemoryStore()),
        "fan_out_fan_in/memory_store": lambda: fan(MemoryStore()),
    }


async def compare(base: dict[str, Any], head: dict[str, Any], repeats: int) -> None:
    for name in base:
        for side in (base, head):  # warm-up: route caches, allocator
            await side[name]().run(0)
        times: dict[str, list[float]] = {"base": [], "head": []}
        for round_ in range(repeats):
            order = (("base", base), ("head", head)) if round_ % 2 == 0 else (("head", head), ("base", base))
            for label, side in order:
                wf = side[name]()
                t0 = time.perf_counter()
                await wf.run(0)
                times[label].append(time.perf_counter() - t0)
        best_base, best_head = min(times["base"]), min(times["head"])
        per_round = [h / b for b, h in zip(times["base"], times["head"])]
        workload, store = name.split("/")
        print(
            json.dumps(
                {
                    "bench": workload,
                    "store": store,
                    "base_best_s": round(best_base, 5),
                    "head_best_s": round(best_head, 5),
                    "ratio": round(best_head / best_base, 3),
                    "median_round_ratio": round(statistics.median(per_round), 3),
                    "repeats": repeats,
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the checkout to compare against")
    parser.add_argument("--head", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    base = workloads(load_engine(Path(args.base), "engine_base"))
    head = workloads(load_engine(Path(args.head), "engine_head"))
    asyncio.run(compare(base, head, args.repeats))


if __name__ == "__main__":
    main()
