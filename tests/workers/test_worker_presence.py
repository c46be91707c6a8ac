"""Real Celery workers in the worker registry: listed with their pool size and queues while they consume, gone
at once when they stop, gone after their heartbeat lapses when they are killed; the dispatcher plans with the
slots it finds there and says why tasks wait."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from barrierflow.broker.worker_registry import MISSED_BEATS, RegistryKeys, WorkerRegistration
from barrierflow.engine.events import EventType, WorkflowEvent
from barrierflow.workers import CeleryDispatcher, app, configure, settings_of
from barrierflow.workers import dispatcher as dispatcher_module
from barrierflow.workers.wire import LAYOUT
from tests import workflows_for_workers as flows
from tests.redis_hygiene import SESSION, forget_celery_nodes
from tests.test_worker_registry import entry
from tests.workers.conftest import HEARTBEAT, WORKERS_PREFIX
from tests.workers.test_workers_protocol import batches


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_the_session_workers_are_listed_with_their_pool_size_queue_and_version(celery_workers) -> None:
    workers = celery_workers.live()
    assert {w.node for w in workers} == {celery_workers.node(name) for name in celery_workers.procs}
    for worker in workers:
        name = worker.node.partition("@")[0]
        assert worker.pid == celery_workers.procs[name].pid  # the main process registers, not a pool child
        assert (worker.slots, worker.pool, worker.queues) == (1, "prefork", (celery_workers.queue,))
        assert worker.layout == LAYOUT and worker.interval == HEARTBEAT
        assert worker.age < MISSED_BEATS * HEARTBEAT


def test_a_stopped_worker_leaves_at_once_and_a_killed_one_after_its_heartbeat_lapses(
    celery_workers, redis_url: str
) -> None:
    queue = f"{celery_workers.queue}-presence"
    stopped, killed = f"{queue}-stopped", f"{queue}-killed"  # named after the session, like all its keys
    keys = RegistryKeys(WORKERS_PREFIX)
    client = redis.Redis.from_url(redis_url)
    try:
        celery_workers.start(stopped, queue=queue)
        celery_workers.start(killed, queue=queue)
        celery_workers.wait_ready([stopped, killed])
        assert len(celery_workers.live(queue)) == 2

        proc = celery_workers.procs.pop(stopped)
        os.killpg(proc.pid, signal.SIGTERM)  # a warm shutdown: it stops consuming, then leaves
        proc.wait(20)
        assert [w.node for w in celery_workers.live(queue)] == [celery_workers.node(killed)]
        assert not client.hexists(keys.entries(queue), celery_workers.node(stopped))

        proc = celery_workers.procs.pop(killed)
        os.killpg(proc.pid, signal.SIGKILL)  # nothing runs: its entry stays until it lapses
        proc.wait(10)
        forget_celery_nodes(redis_url, [celery_workers.node(killed)])  # Celery's pidbox binding, not ours
        assert celery_workers.live(queue), "a killed worker's entry lapses, it is not removed"
        lapsed_within = MISSED_BEATS * HEARTBEAT + 2
        wait_for(lambda: not celery_workers.live(queue), lapsed_within, "the killed worker's entry to lapse")
        wait_for(lambda: not client.exists(keys.live(queue), keys.entries(queue)), 5, "its keys to expire")
    finally:
        client.close()
        for name in (stopped, killed):
            if name in celery_workers.procs:
                celery_workers.kill(name)
            celery_workers.queues.pop(name, None)


def test_queues_added_and_cancelled_by_remote_control_show_in_the_registry(celery_workers) -> None:
    """Remote control still works (without replies), and each beat reads the queues the worker consumes."""
    extra = f"{celery_workers.queue}-extra"
    [first, *_] = sorted(celery_workers.procs)
    node = celery_workers.node(first)
    app.control.add_consumer(extra, destination=[node], reply=False)
    try:
        listed = wait_for(lambda: celery_workers.live(extra), 10 * HEARTBEAT, "the added queue")
        assert [w.node for w in listed] == [node] and set(listed[0].queues) == {celery_workers.queue, extra}
    finally:
        app.control.cancel_consumer(extra, destination=[node], reply=False)
    wait_for(lambda: not celery_workers.live(extra), 10 * HEARTBEAT, "the cancelled queue to be left")
    assert node in {w.node for w in celery_workers.live()}


async def test_the_dispatcher_plans_with_the_registrys_slots(redis_url: str) -> None:
    """Slots: ``slots=`` or BARRIERFLOW_WORKER_SLOTS first, else the registry's sum, else the fallback."""
    saved = settings_of(app)
    queue = f"bftest-{SESSION}-plan-{time.monotonic_ns()}"
    client = redis.Redis.from_url(redis_url)
    configure(app, redis_url=redis_url, prefix=WORKERS_PREFIX, worker_slots=None)
    registrations = []
    try:
        dispatcher = CeleryDispatcher(app, queue=queue, min_task_deliveries=1)
        assert await dispatcher.worker_slots() == dispatcher_module.FALLBACK_SLOTS  # nobody registered yet
        for node, slots in (("a@h", 3), ("b@h", 5)):
            registrations.append(WorkerRegistration(client, WORKERS_PREFIX, node))
            registrations[-1].beat(entry(node, queue, slots=slots))
        assert await dispatcher.worker_slots() == dispatcher_module.FALLBACK_SLOTS  # read 0 s ago: cached
        assert [w.node for w in await dispatcher.live_workers(fresh=True)] == ["a@h", "b@h"]
        assert await dispatcher.worker_slots() == 8
        assert len(await dispatcher.plan(batches([1] * 100))) == 8 * dispatcher.tasks_per_slot
        await dispatcher.aclose()

        assert await CeleryDispatcher(app, queue=queue, slots=1).worker_slots() == 1
        configure(app, worker_slots=6)
        assert await CeleryDispatcher(app, queue=queue).worker_slots() == 6
    finally:
        for registration in registrations:
            registration.leave([queue])
        client.close()
        configure(app, saved)


async def test_the_wait_warning_says_whether_workers_are_missing_or_busy(
    celery_workers, redis_store, redis_url: str
) -> None:
    """A queue with a registered worker that takes nothing (busy) against one without any worker."""
    client = redis.Redis.from_url(redis_url)
    busy_queue = f"{celery_workers.queue}-busy"
    busy = WorkerRegistration(client, WORKERS_PREFIX, "busy@h")

    async def first_warning(queue: str) -> WorkflowEvent:
        dispatcher = CeleryDispatcher(store=redis_store, queue=queue, slots=1, redispatch_after=0.2)
        wf = flows.bfw_versioned().build(
            instance_id=f"{redis_store.prefix}-{queue[-4:]}", store=redis_store, dispatcher=dispatcher
        )
        stream = wf.stream("hi")
        try:
            async for event in stream:
                if event.type == EventType.WARNING:
                    return event
        finally:
            await stream.aclose()  # the run stops; its lease is released
            await dispatcher.aclose()
            client.delete(queue)
        raise AssertionError("no warning")

    try:
        busy.beat(entry("busy@h", busy_queue, slots=4, interval=30))
        warning = await asyncio.wait_for(first_warning(busy_queue), 30)
        assert "its 1 live worker(s) (4 slot(s)) are busy" in warning.data
        assert warning.details["live_workers"] == 1 and warning.details["slots"] == 4

        nobody = await asyncio.wait_for(first_warning(f"{celery_workers.queue}-nobody-w"), 30)
        assert (
            "no live worker consumes it (worker registry under prefix 'barrierflow' in Redis" in nobody.data
        )
        assert nobody.details["live_workers"] == 0
    finally:
        busy.leave([busy_queue])
        client.close()


@pytest.fixture(autouse=True)
def _no_broadcast_with_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this module nothing of barrierflow may ask the workers for replies (the tests' casts send none)."""
    from kombu import pidbox

    original = pidbox.Mailbox._broadcast

    def refuse_replies(self, command, arguments=None, destination=None, reply=False, *args, **kwargs):
        assert not reply, f"a broadcast with replies ({command}) leaves reply keys in Redis"
        return original(self, command, arguments, destination, reply, *args, **kwargs)

    monkeypatch.setattr(pidbox.Mailbox, "_broadcast", refuse_replies)
