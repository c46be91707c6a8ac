"""Checkpoint layout: executor states are stored per key (keyframe + delta), never rewritten in full for a
superstep that changed one executor, and always materialise completely and correctly."""

from __future__ import annotations

from dataclasses import dataclass

from barrierflow.engine import Executor, WorkflowBuilder, WorkflowContext, handler

from .bf_helpers import checkpoints, latest

N = 300


@dataclass
class Tick:
    target: str
    value: int


@dataclass
class Sweep:
    index: int
    count: int


class Hub(Executor):
    @handler
    async def on_init(self, msg: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(msg)  # broadcast to every worker

    @handler
    async def on_tick(self, tick: Tick, ctx: WorkflowContext) -> None:
        await ctx.send_message(tick.value, target_id=tick.target)

    @handler
    async def on_sweep(self, sweep: Sweep, ctx: WorkflowContext) -> None:
        """Change one worker per superstep, ``count`` times, starting at ``index``."""
        if sweep.count == 0:
            return
        await ctx.send_message(-sweep.index, target_id=f"w{sweep.index}")
        await ctx.send_message(Sweep(sweep.index + 1, sweep.count - 1), target_id="hub")


class Worker(Executor):
    @handler
    async def on_init(self, msg: str, ctx: WorkflowContext) -> None:
        ctx.set_executor_state(f"{msg}-{ctx.executor_id}")

    @handler
    async def on_value(self, value: int, ctx: WorkflowContext) -> None:
        ctx.set_executor_state(value)


def build(store, instance_id="many"):
    hub = Hub(id="hub")
    workers = [Worker(id=f"w{i}") for i in range(N)]
    return (
        WorkflowBuilder(name="many", start_executor=hub)
        .add_fan_out_edges(hub, workers)
        .add_edge(hub, hub, condition=lambda m: isinstance(m, Sweep))
        .build(store=store, instance_id=instance_id)
    )


def initial() -> dict[str, object]:
    return {f"w{i}": f"init-w{i}" for i in range(N)}


async def test_one_changed_executor_of_300_keeps_states_complete_and_small(store):
    wf = build(store)
    init = await wf.run("init")
    expected = initial()
    assert (await latest(wf)).executor_states == expected

    keyframe_bytes = None
    for k, target in enumerate(["w5", "w299", "w5", "w0", "w150"], start=1):
        await wf.run(Tick(target, k))
        expected[target] = k
        cp = await latest(wf)
        assert cp.executor_states == expected
        head, keyframe = await store.read_record(cp.checkpoint_id)
        if keyframe_bytes is None:
            keyframe_bytes = keyframe
        # the full state is not rewritten: the keyframe is shared, the head stays small
        assert keyframe == keyframe_bytes
        assert len(head) * 4 < len(keyframe), (len(head), len(keyframe))

    # every retained checkpoint materialises the complete state it had
    for cp in await checkpoints(wf):
        if cp.run_id != init.run_id or cp.superstep == 2:
            assert len(cp.executor_states) == N

    # restore an older checkpoint and continue from it
    after_two = [cp for cp in await checkpoints(wf) if cp.executor_states.get("w299") == 2][-1]
    assert after_two.executor_states["w5"] in (1, 3)
    await wf.restore(after_two.checkpoint_id)
    restored = await latest(wf)
    assert restored.executor_states == after_two.executor_states
    await wf.run(Tick("w7", 77))
    want = dict(after_two.executor_states, w7=77)
    assert (await latest(wf)).executor_states == want

    # a new handle over the same store sees the same complete state
    other = build(store, instance_id=wf.instance_id)
    await other.run(Tick("w8", 88))
    assert (await latest(other)).executor_states == dict(want, w8=88)


async def test_many_supersteps_each_changing_one_executor(store):
    wf = build(store, instance_id="sweep")
    await wf.run("init")
    result = await wf.run(Sweep(0, 90))  # 90 distinct executors, one per superstep: crosses keyframe cuts
    final = await latest(wf)
    expected = initial()
    for i in range(90):
        expected[f"w{i}"] = -i
    assert final.executor_states == expected

    for cp in await checkpoints(wf):
        if cp.run_id != result.run_id:
            continue
        # the worker w_i is delivered in superstep i + 2 of the sweep run
        want = initial()
        for i in range(90):
            if i + 2 <= cp.superstep:
                want[f"w{i}"] = -i
        assert cp.executor_states == want, cp.superstep

    # restore a checkpoint from the middle of the sweep and check the copy is complete
    middle = next(cp for cp in await checkpoints(wf) if cp.run_id == result.run_id and cp.superstep == 60)
    copy_id = await wf.restore(middle.checkpoint_id)
    copy = await store.load_checkpoint(copy_id)
    assert copy.executor_states == middle.executor_states
    assert len(copy.executor_states) == N
    # its queued work continues the sweep from there
    await wf.run()
    assert (await latest(wf)).executor_states == expected
