"""The run queue with coordinators in this process, on the real Redis: DESIGN §4 semantics one by one."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import uuid
from datetime import datetime

import pytest

from barrierflow.broker import RedisStore, RunQueue
from barrierflow.engine import EventType, MemoryStore, RunState
from barrierflow.engine.errors import (
    ExecutorFailedError,
    GraphSignatureMismatchError,
    RunCancelledError,
    WorkflowError,
    WorkflowRunInProgressError,
)
from tests import queue_flows
from tests import workflows_for_workers as flows
from tests.queue.conftest import ROOT, eventually


async def in_process(factory, message=None, **kwargs):
    return await factory().build(store=MemoryStore()).run(message, **kwargs)


def types_of(events):
    return [e.type for e in events]


@pytest.mark.parametrize(
    ("factory", "message"),
    [(flows.bfw_fan, "ab cd ef"), (flows.bfw_switch, [1, 2, 3, 200, 201]), (flows.bfw_loop, 1)],
)
async def test_submit_and_wait_give_what_an_in_process_run_gives(
    runs, coordinators, factory, message
) -> None:
    await coordinators()
    ticket = await runs.submit(factory, message)
    result = await runs.wait(ticket.run_id, timeout=30)
    expected = await in_process(factory, message)
    assert result.outputs == expected.outputs
    assert result.status is expected.status is RunState.IDLE
    assert result.run_id == ticket.run_id
    assert types_of(result.events) == types_of(expected.events)  # the same events, in the same order
    assert all(e.run_id == ticket.run_id and e.event_id for e in result.events)
    assert result.checkpoint_id == (await runs.store.latest_id(ticket.instance_id))


async def test_the_run_record(runs, coordinators) -> None:
    coordinator = await coordinators()
    ticket = await runs.submit("bfw_fan", "x y", metadata={"user": "ada", "n": 3})
    queued = await runs.get(ticket.run_id)
    assert queued.state in ("queued", "running") and queued.metadata == {"user": "ada", "n": 3}
    await runs.wait(ticket.run_id, timeout=30)
    info = await runs.get(ticket.run_id)
    assert info.state == "completed" and info.ended
    assert info.workflow_name == "bfw_fan" and info.instance_id == ticket.instance_id
    assert info.status is RunState.IDLE and info.error is None
    assert info.attempts == 1 and info.coordinator == coordinator.name
    assert all(isinstance(t, datetime) and t.tzinfo is not None for t in (info.submitted_at, info.started_at))
    assert info.submitted_at <= info.started_at <= info.finished_at
    assert info.outputs == (await in_process(flows.bfw_fan, "x y")).outputs
    assert info.checkpoint_id == await runs.store.latest_id(ticket.instance_id)
    instance_id, run_hex = ticket.run_id.split("@")
    record = await runs.store.client.hgetall(runs.keys.run_record(instance_id, run_hex))
    assert f"{instance_id}@{record[b'cks'].decode()}" == info.checkpoint_id  # kept as its suffix alone
    summary = (await runs.list_runs(instance_id=ticket.instance_id))[0]
    assert summary.run_id == ticket.run_id and summary.state == "completed" and summary.outputs == []


async def test_unknown_and_malformed_run_ids_raise_lookup_error(runs) -> None:
    with pytest.raises(LookupError):
        await runs.get(f"nobody-{uuid.uuid4().hex}@0123456789abcdef")
    for bad in ("no-at-sign", "x@short", "x@0123456789abcdeg"):
        with pytest.raises(LookupError):
            await runs.get(bad)
    with pytest.raises(LookupError):
        await runs.cancel(f"nobody@{'0' * 16}")


async def test_bad_submissions_are_refused_before_anything_is_stored(runs) -> None:
    with pytest.raises(TypeError, match="no handler"):
        await runs.submit(flows.bfw_fan, 42)  # its start executor takes str
    with pytest.raises(ValueError, match="not both"):
        await runs.submit("bfw_fan", "x", checkpoint_id="i@" + "0" * 20)
    with pytest.raises(ValueError, match="instance_id"):
        await runs.submit("bfw_hitl", responses={"r": True})
    with pytest.raises(ValueError, match="strategy"):
        await runs.submit("bfw_fan", "x", strategy="maybe")
    assert await runs.list_runs() == []


async def test_a_run_submitted_by_a_process_that_exited_before_any_coordinator_started_completes(
    runs, coordinators, redis_url, real_redis_prefix
) -> None:
    script = (
        "import asyncio, sys\n"
        "from barrierflow.broker import RedisStore, RunQueue\n"
        "async def main():\n"
        f"    store = RedisStore.from_url({redis_url!r}, prefix={real_redis_prefix!r})\n"
        "    async with RunQueue(store) as q:\n"
        "        ticket = await q.submit('bfw_loop', 2)\n"
        "    await store.aclose()\n"
        "    print(ticket.run_id)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert (await runs.get(run_id)).state == "queued"  # nobody has taken it: no coordinator exists yet
    await coordinators()
    result = await runs.wait(run_id, timeout=30)
    assert result.outputs == (await in_process(flows.bfw_loop, 2)).outputs


async def test_runs_of_one_instance_run_in_submission_order(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-fifo"
    tickets = [await runs.submit("q_append", {"n": n, "delay": 0.02}, instance_id=instance) for n in range(6)]
    await coordinators(concurrency=4)
    results = [await runs.wait(t.run_id, timeout=30) for t in tickets]
    assert [r.outputs for r in results] == [[list(range(n + 1))] for n in range(6)]
    infos = [await runs.get(t.run_id) for t in tickets]
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(infos))


async def test_a_busy_instance_holds_up_neither_other_instances_nor_a_coordinator_slot(
    runs, coordinators
) -> None:
    """Concurrency 2: instance A has five slow runs queued; B and C, submitted after, still finish first."""
    slow = [
        await runs.submit("q_append", {"n": n, "delay": 0.4}, instance_id=f"{runs.keys.prefix}-a")
        for n in range(5)
    ]
    fast = [await runs.submit("q_append", {"n": 0}, instance_id=f"{runs.keys.prefix}-{x}") for x in "bc"]
    await coordinators(concurrency=2)
    for ticket in fast:
        await runs.wait(ticket.run_id, timeout=30)
    assert [(await runs.get(t.run_id)).state for t in fast] == ["completed", "completed"]
    states = [(await runs.get(t.run_id)).state for t in slow]
    assert states.count("completed") < 5, states  # B and C did not wait for A to drain
    last = await runs.wait(slow[-1].run_id, timeout=30)
    assert last.outputs == [list(range(5))]


async def test_strategy_reject_refuses_while_a_run_is_queued_or_running(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-reject"
    first = await runs.submit("q_append", {"n": 1, "delay": 0.5}, instance_id=instance)
    with pytest.raises(WorkflowRunInProgressError, match="busy"):
        await runs.submit("q_append", {"n": 2}, instance_id=instance, strategy="reject")  # queued
    await coordinators()
    await eventually(lambda: _state_is(runs, first.run_id, "running"), 10, "the first run to start")
    with pytest.raises(WorkflowRunInProgressError, match="busy"):
        await runs.submit("q_append", {"n": 2}, instance_id=instance, strategy="reject")  # running
    await runs.wait(first.run_id, timeout=30)
    again = await runs.submit("q_append", {"n": 2}, instance_id=instance, strategy="reject")
    assert (await runs.wait(again.run_id, timeout=30)).outputs == [[1, 2]]
    assert len(await runs.list_runs(instance_id=instance)) == 2  # the refused ones left no record


async def _state_is(runs: RunQueue, run_id: str, state: str) -> bool:
    return (await runs.get(run_id)).state == state


async def test_a_cancelled_queued_run_never_starts(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-cq"
    doomed = await runs.submit("q_append", {"n": 1}, instance_id=instance)
    kept = await runs.submit("q_append", {"n": 2}, instance_id=instance)
    assert await runs.cancel(doomed.run_id) is True
    assert await runs.cancel(doomed.run_id) is False  # ended already
    await coordinators()
    with pytest.raises(RunCancelledError):
        await runs.wait(doomed.run_id, timeout=10)
    assert (await runs.wait(kept.run_id, timeout=30)).outputs == [[2]]  # the cancelled one never ran
    info = await runs.get(doomed.run_id)
    assert info.state == "cancelled" and info.attempts == 0 and info.started_at is None
    assert info.error["type"] == "RunCancelledError"
    assert [e.type for e in [e async for e in runs.stream(doomed.run_id)]] == [EventType.RUN_ENDED]


async def test_a_cancelled_running_run_stops_at_a_barrier_and_its_work_stays_queued(
    runs, coordinators
) -> None:
    instance = f"{runs.keys.prefix}-cr"
    job = {"step": 1, "steps": 30, "delay": 0.2}
    ticket = await runs.submit("q_steps", job, instance_id=instance)
    await coordinators()
    await eventually(lambda: _committed_steps(runs, instance, 2), 20, "two supersteps to commit")
    assert await runs.cancel(ticket.run_id) is True
    with pytest.raises(RunCancelledError):
        await runs.wait(ticket.run_id, timeout=20)
    info = await runs.get(ticket.run_id)
    assert info.state == "cancelled" and info.error["type"] == "RunCancelledError"
    latest = await runs.store.latest_checkpoint(instance)
    assert latest.messages and latest.superstep < 30  # at a barrier, the next step queued
    stopped_at = latest.superstep
    # the instance continues from that barrier: a run with no input continues its queued work
    rest = await runs.submit("q_steps", instance_id=instance)
    result = await runs.wait(rest.run_id, timeout=60)
    expected = await in_process(queue_flows.q_steps, {**job, "delay": 0})
    assert info.outputs + result.outputs == expected.outputs
    assert result.outputs[0]["step"] == stopped_at + 1


async def _committed_steps(runs: RunQueue, instance: str, n: int) -> bool:
    latest = await runs.store.latest_checkpoint(instance)
    return latest is not None and latest.superstep >= n


async def test_an_unknown_workflow_fails_its_run_and_the_coordinator_goes_on(runs, coordinators) -> None:
    await coordinators()
    ticket = await runs.submit("no_such_workflow", "x")
    with pytest.raises(WorkflowError, match="no_such_workflow"):
        await runs.wait(ticket.run_id, timeout=30)
    info = await runs.get(ticket.run_id)
    assert info.state == "failed" and info.error["type"] == "WorkflowError"
    instance = await runs.instance(ticket.instance_id)  # no checkpoint was ever written: the run says it all
    assert instance.status is RunState.FAILED and instance.workflow_name == "no_such_workflow"
    ok = await runs.submit("bfw_loop", 5)
    assert (await runs.wait(ok.run_id, timeout=30)).status is RunState.IDLE


async def test_a_signature_mismatch_fails_the_run_with_a_typed_error(runs, coordinators) -> None:
    await coordinators()
    ticket = await runs.submit(flows.bfw_versioned_v2, "x")  # same name, another graph than the coordinator's
    with pytest.raises(GraphSignatureMismatchError, match="bfw_versioned"):
        await runs.wait(ticket.run_id, timeout=30)
    assert (await runs.get(ticket.run_id)).error["type"] == "GraphSignatureMismatchError"
    fine = await runs.submit(flows.bfw_versioned, "x")
    assert (await runs.wait(fine.run_id, timeout=30)).outputs == ["x"]


async def test_a_failing_handler_fails_the_run_and_leaves_the_instance_at_its_last_barrier(
    runs, coordinators
) -> None:
    instance = f"{runs.keys.prefix}-fuse"
    flows.side().set(flows.side_key(instance, "fuse"), 1)
    await coordinators()
    ticket = await runs.submit("bfw_fuse", "t", instance_id=instance)
    with pytest.raises(ExecutorFailedError) as failed:
        await runs.wait(ticket.run_id, timeout=30)
    assert failed.value.executor_id == "fragile" and failed.value.error_type == "ValueError"
    info = await runs.get(ticket.run_id)
    assert (
        info.status is RunState.FAILED
        and info.error["error_type"] == "ValueError"
        and info.error["traceback"]
    )
    assert (await runs.instance(instance)).status is RunState.FAILED
    flows.side().delete(flows.side_key(instance, "fuse"))
    retry = await runs.submit("bfw_fuse", instance_id=instance)  # continue: the failed superstep again
    assert sorted((await runs.wait(retry.run_id, timeout=30)).outputs) == ["fragile:t", "steady:t"]


async def test_human_in_the_loop_through_the_queue(runs, coordinators) -> None:
    await coordinators()
    asked = await runs.submit("bfw_hitl", "a,b")
    paused = await runs.wait(asked.run_id, timeout=30)
    assert paused.status is RunState.IDLE_WITH_PENDING_REQUESTS
    assert sorted(paused.pending_requests) == ["req-a", "req-b"]
    assert paused.pending_requests["req-a"].data == "approve a?"
    info = await runs.instance(asked.instance_id)
    assert info.status is RunState.IDLE_WITH_PENDING_REQUESTS and sorted(info.pending_requests) == [
        "req-a",
        "req-b",
    ]
    answered = await runs.submit(
        "bfw_hitl", responses={"req-a": True, "req-b": False}, instance_id=asked.instance_id
    )
    result = await runs.wait(answered.run_id, timeout=30)
    wf = flows.bfw_hitl().build(store=MemoryStore())
    await wf.run("a,b")
    expected = await wf.run(responses={"req-a": True, "req-b": False})
    assert result.outputs == expected.outputs and result.status is RunState.IDLE
    unknown = await runs.submit("bfw_hitl", responses={"req-zzz": True}, instance_id=asked.instance_id)
    with pytest.raises(KeyError, match="req-zzz"):  # UnknownRequestError, a KeyError
        await runs.wait(unknown.run_id, timeout=30)


async def test_instance_info(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-info"
    with pytest.raises(LookupError):
        await runs.instance(instance)
    queued = [await runs.submit("q_append", {"n": n}, instance_id=instance) for n in range(2)]
    info = await runs.instance(instance)
    assert info.queued_run_ids == [t.run_id for t in queued] and info.active_run_id is None
    assert info.workflow_name == "q_append" and info.checkpoint_id is None and info.holder is None
    await coordinators()
    await runs.wait(queued[-1].run_id, timeout=30)
    info = await runs.instance(instance)
    assert info.status is RunState.IDLE and info.queued_run_ids == [] and info.superstep == 1
    assert info.checkpoint_id == await runs.store.latest_id(instance)
    listed = await runs.list_instances(workflow="q_append")
    assert listed[0].instance_id == instance


async def test_stream_follows_a_run_live_and_ends_with_it(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-live"
    ticket = await runs.submit("q_steps", {"step": 1, "steps": 5, "delay": 0.1}, instance_id=instance)
    events = []

    async def follow():
        async for event in runs.stream(ticket.run_id):
            events.append(event)

    following = asyncio.ensure_future(follow())
    await asyncio.sleep(0.2)
    assert not following.done()  # nothing ran yet: it waits
    await coordinators()
    await asyncio.wait_for(following, 30)
    assert events[0].type == EventType.STARTED and events[-1].type == EventType.RUN_ENDED
    assert events[-1].data["state"] == "completed"
    assert [e.data["step"] for e in events if e.type == EventType.OUTPUT] == [1, 2, 3, 4, 5]
    ids = [e.event_id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    again = [e async for e in runs.stream(ticket.run_id)]  # an ended run: its events, then the end
    assert [e.event_id for e in again] == ids


async def test_events_after_an_id_continue_exactly_across_a_reconnect_while_a_run_produces(
    runs, coordinators
) -> None:
    instance = f"{runs.keys.prefix}-resume"
    first = await runs.submit("q_steps", {"step": 1, "steps": 1, "delay": 0}, instance_id=instance)
    await coordinators()
    await runs.wait(first.run_id, timeout=30)
    ticket = await runs.submit("q_steps", {"step": 1, "steps": 40, "delay": 0.02}, instance_id=instance)
    seen = []
    async for event in runs.events(instance):  # disconnect in the middle of the run
        seen.append(event)
        if event.type == EventType.OUTPUT and event.run_id == ticket.run_id and event.data["step"] == 10:
            break
    assert (await runs.get(ticket.run_id)).state != "completed"
    async for event in runs.events(instance, after=seen[-1].event_id):  # reconnect after the last one seen
        seen.append(event)
        if event.type == EventType.RUN_ENDED and event.run_id == ticket.run_id:
            break
    everything = [e async for e in runs.events(instance, follow=False)]
    assert [e.event_id for e in seen] == [e.event_id for e in everything]  # no gap, no duplicate
    assert [e.data["step"] for e in seen if e.type == EventType.OUTPUT and e.run_id == ticket.run_id] == list(
        range(1, 41)
    )
    with pytest.raises(ValueError, match="event id"):
        async for _ in runs.events(instance, after="not-an-id"):
            pass


async def test_many_followers_of_one_instance_share_one_reader(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-fans"
    ticket = await runs.submit("q_steps", {"step": 1, "steps": 8, "delay": 0.05}, instance_id=instance)

    async def follow():
        return [e.event_id async for e in runs.stream(ticket.run_id)]

    followers = [asyncio.ensure_future(follow()) for _ in range(50)]
    await coordinators()
    results = await asyncio.wait_for(asyncio.gather(*followers), 60)
    assert len({tuple(r) for r in results}) == 1 and len(results[0]) > 20
    clients = await runs.store.client.client_list()
    mine = [c for c in clients if c.get("name") == runs.keys.prefix]  # not other processes' on this Redis
    assert mine and sum(1 for c in mine if c.get("cmd") == "xread") <= 1


async def test_submit_and_wait(runs, coordinators) -> None:
    instance = f"{runs.keys.prefix}-sw"
    ticket, info = await runs.submit_and_wait("q_append", {"n": 1}, instance_id=instance, timeout=0.3)
    assert info is None and (await runs.get(ticket.run_id)).state == "queued"  # no coordinator yet
    await coordinators()
    second, info = await runs.submit_and_wait("q_append", {"n": 2}, instance_id=instance, timeout=30)
    assert info.run_id == second.run_id and info.state == "completed" and info.outputs == [[1, 2]]
    assert not runs._state().waiters._waiting  # no waiter left behind, ended or timed out
    slow, _ = await runs.submit_and_wait("q_append", {"n": 3, "delay": 5}, instance_id=instance, timeout=0.1)
    with pytest.raises(WorkflowRunInProgressError):
        await runs.submit_and_wait("q_append", {"n": 4}, instance_id=instance, strategy="reject", timeout=5)
    assert not runs._state().waiters._waiting
    assert await runs.cancel(slow.run_id)


async def test_a_follower_that_leaves_frees_the_shared_reader_at_once(runs, qstore) -> None:
    """Closing an ``events`` iterator (at a yield, as a web client's stream is) detaches its follower right
    away, and the last follower leaving ends the reader's blocked ``XREAD`` instead of waiting out its block
    time; a cancelled one likewise."""
    instance = f"{runs.keys.prefix}-leave"
    await runs.submit(
        "q_append", {"n": 1}, instance_id=instance
    )  # queued, never run: one event-free instance
    reader = runs._state().reader

    async def blocked() -> bool:
        clients = await qstore.client.client_list()
        return any(c.get("id") == str(reader._reader_id) and "b" in c.get("flags", "") for c in clients)

    events = runs.events(instance)
    waiting = asyncio.ensure_future(events.__anext__())
    await eventually(blocked, 5, "the reader to block on the instance's stream")
    await runs.cancel(f"{instance}@" + (await runs.instance(instance)).queued_run_ids[0].split("@")[1])
    await asyncio.wait_for(waiting, 5)  # the cancel's run_ended event: the iterator is now at a yield
    await events.aclose()
    assert not reader._followers  # at once, not when the garbage collector finalizes the inner generator
    deadline = asyncio.get_running_loop().time() + 0.5  # the reader blocks for up to 5 s per XREAD
    while await blocked():
        assert asyncio.get_running_loop().time() < deadline, (
            "the reader stayed blocked after its last follower left"
        )
        await asyncio.sleep(0.02)

    following = asyncio.ensure_future(anext(runs.events(instance, after=(await _last_id(runs, instance)))))
    await eventually(blocked, 5, "the reader to block again")
    following.cancel()
    await eventually(lambda: _not(blocked), 0.5, "a cancelled follower to free the reader")
    assert not reader._followers


async def _last_id(runs, instance: str) -> str:
    return [e.event_id async for e in runs.events(instance, follow=False)][-1]


async def _not(predicate) -> bool:
    return not await predicate()


async def test_the_event_stream_is_capped(qstore, coordinators) -> None:
    async with RunQueue(qstore, events_maxlen=100) as capped:
        await coordinators(queue=capped)
        instance = f"{qstore.prefix}-cap"
        for _ in range(5):
            ticket = await capped.submit(
                "q_steps", {"step": 1, "steps": 30, "delay": 0}, instance_id=instance
            )
            await capped.wait(ticket.run_id, timeout=60)
        length = await qstore.client.xlen(qstore.keys.events(instance))
        assert 100 <= length <= 200  # approximate trimming: whole stream nodes of 100 entries


async def test_thousand_runs_leave_a_bounded_number_of_keys_and_results_expire(qstore, coordinators) -> None:
    async with RunQueue(qstore, result_ttl=3, keep_results=10) as short:
        await coordinators(queue=short, concurrency=8)
        instance = f"{qstore.prefix}-many"
        pattern = f"{qstore.prefix}:{{{instance}}}:*"
        counts, tickets = [], []
        for _ in range(2):
            tickets += [await short.submit("q_append", {"n": n}, instance_id=instance) for n in range(500)]
            last = await short.wait(tickets[-1].run_id, timeout=120)
            keys = [k async for k in qstore.client.scan_iter(match=pattern, count=1000)]
            counts.append(len(keys))
            assert len([k for k in keys if b":rq:run:" in k]) == 10  # the newest ten ended runs
            assert len([k for k in keys if b":rq:res:" in k]) == 10
        assert last.outputs[0][-3:] == [497, 498, 499]
        assert counts[0] == counts[1]  # 500 more runs, not one key more
        assert (
            counts[1] <= 2 * 10 + 2 * qstore.retention + 10
        )  # records, checkpoints, the instance's own keys
        with pytest.raises(LookupError):
            await short.get(tickets[0].run_id)  # trimmed away by the newer ones
        await eventually(lambda: _gone(short, tickets[-1].run_id), 10, "the last result to expire")


async def _gone(runs: RunQueue, run_id: str) -> bool:
    try:
        await runs.get(run_id)
    except LookupError:
        return True
    return False


async def test_wait_times_out_and_the_run_goes_on(runs, coordinators) -> None:
    ticket = await runs.submit("q_append", {"n": 1})
    with pytest.raises(TimeoutError):
        await runs.wait(ticket.run_id, timeout=0.3)
    await coordinators()
    assert (await runs.wait(ticket.run_id, timeout=30)).outputs == [[1]]


async def test_a_run_stopped_by_stop_is_handed_back_and_continued_by_another_coordinator(
    runs, coordinators
) -> None:
    instance = f"{runs.keys.prefix}-handback"
    job = {"step": 1, "steps": 12, "delay": 0.1}
    ticket = await runs.submit("q_steps", job, instance_id=instance)
    first = await coordinators()
    await eventually(lambda: _committed_steps(runs, instance, 2), 20, "two supersteps to commit")
    await first.stop()
    info = await runs.get(ticket.run_id)
    assert info.state == "queued" and info.attempts == 1  # handed back, at a barrier
    assert (await runs.instance(instance)).holder is None
    second = await coordinators()
    result = await runs.wait(ticket.run_id, timeout=30)
    expected = await in_process(queue_flows.q_steps, {**job, "delay": 0})
    assert result.outputs == expected.outputs  # the outputs of both attempts, each once
    done = await runs.get(ticket.run_id)
    assert done.attempts == 2 and done.coordinator == second.name
    executions = {
        int(k): int(v) for k, v in flows.side().hgetall(flows.side_key(instance, "executions")).items()
    }
    assert sorted(executions) == list(range(1, 13)) and all(n <= 2 for n in executions.values())


async def test_a_run_longer_than_the_lease_ttl_is_never_taken_over_while_its_coordinator_lives(
    redis_url, real_redis_prefix
) -> None:
    """Heartbeats keep the entry claimed and the lease renewed: another coordinator's sweep leaves it alone."""
    from barrierflow.workers import Coordinator

    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=1.0)
    options = {"sweep_interval": 0.2, "sweep_margin": 0.1, "shutdown_grace": 5.0}
    async with (
        RunQueue(store) as runs,
        Coordinator(store, **options) as first,
        Coordinator(store, **options) as other,
    ):
        serving = [asyncio.ensure_future(c.serve(handle_signals=False)) for c in (first,)]
        instance = f"{real_redis_prefix}-longer"
        ticket = await runs.submit("q_steps", {"step": 1, "steps": 8, "delay": 0.5}, instance_id=instance)
        await eventually(lambda: _state_is(runs, ticket.run_id, "running"), 10, "the run to start")
        serving.append(
            asyncio.ensure_future(other.serve(handle_signals=False))
        )  # sweeps every 0.2 s, TTL 1 s
        owners, deliveries = set(), set()
        while (await runs.get(ticket.run_id)).state == "running":
            pending = await store.client.xpending_range(runs.ready_key, "coordinators", "-", "+", 10)
            owners |= {p["consumer"].decode() for p in pending}
            deliveries |= {p["times_delivered"] for p in pending}
            await asyncio.sleep(0.1)
        info = await runs.get(ticket.run_id)
        assert info.state == "completed" and info.attempts == 1 and info.coordinator == first.name
        assert owners == {first.name} and deliveries == {1}  # never swept, by the other or by itself
    await asyncio.gather(*serving)
    await store.aclose()


async def test_runs_handed_back_while_the_intake_reads_are_not_stranded_with_the_leaving_coordinator(
    redis_url, real_redis_prefix, coordinators
) -> None:
    """The leaving coordinator's read of the queue is blocked in Redis when it hands its runs back under fresh
    entries: that read must give them back, not leave them pending on the leaving consumer, where only a
    sweep would find them a lease TTL (a minute here) later."""
    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=60.0)
    started = []
    try:
        async with RunQueue(store) as queue:
            job = {"step": 1, "steps": 8, "delay": 0.1}
            tickets = [
                await queue.submit("q_steps", job, instance_id=f"{real_redis_prefix}-stranded{i}")
                for i in range(6)
            ]
            first = await coordinators(store, queue=queue, read_block=5.0, shutdown_grace=10.0)
            started.append(first)
            give_back = first._side.requeue

            async def slow_give_back(entry_id: str, instance_id: str) -> None:
                await asyncio.sleep(1.0)  # a loaded machine: the read's entries are given back late
                await give_back(entry_id, instance_id)

            first._side.requeue = slow_give_back  # type: ignore[method-assign]
            await eventually(lambda: _all_running(queue, tickets), 20, "the runs to start")
            await first.stop()
            assert [(await queue.get(t.run_id)).state for t in tickets] == ["queued"] * 6
            started.append(await coordinators(store, queue=queue, read_block=0.2))
            results = await asyncio.gather(*(queue.wait(t.run_id, timeout=15) for t in tickets))
            assert results[0].outputs and all(r.outputs == results[0].outputs for r in results)
    finally:
        for coordinator in started:  # before their store closes, also when the test failed
            await coordinator.stop()
        await store.aclose()


async def _all_running(queue: RunQueue, tickets: list) -> bool:
    return [(await queue.get(t.run_id)).state for t in tickets] == ["running"] * len(tickets)
