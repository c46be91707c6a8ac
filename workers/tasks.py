"""The worker's task: run one group of a superstep's executor batches and write the result, fenced.

A task is at-least-once: Celery redelivers it when its worker process dies (``task_reject_on_worker_lost``),
and the coordinator re-sends it when its result misses a deadline. That is safe because a task has no effect
outside its result record. Timeline of the case this protects against:

    t=0   the coordinator sends task 2 (executor "count") of superstep 5; worker W1 claims it (started = 1)
    t=0.4 W1 is SIGKILLed halfway through its deliveries; nothing of them exists anywhere but W1's memory
    t=10  W1's claim, no longer refreshed, lapses
    t=30  the check: send 1 was picked up, no claim, no result, so the coordinator sends copy 2; W2 runs it
          from the same committed state (carried in the payload) and writes its record
    t=31  had W1 been cut off from Redis rather than killed, its late write would find W2's record and change
          nothing (and once the run's lease is gone, it would be refused by the fence)

The handlers' effects (state writes, messages, outputs) commit once, at the coordinator's barrier, from the one
record that won. A copy that finds the record already written, another copy running, its superstep collected,
or its run's lease gone, skips its handlers (``claim.lua``).

A pack (``run_pack``, ``workers/packing.py``) carries copies of several runs' tasks that were ready together. It
is only transport: each copy is claimed, fenced, run and written exactly as if it came alone, so one copy's
ended lease or collected superstep skips that copy and the others run. What a pack saves is round trips: the
claims of all its copies go out as one pipeline, and the results, with their claims' releases, as another
(``broker/results.py``: ``Claims``), at most ``RESULT_FLUSH`` seconds after each copy finished. Its copies run
one after another, so Celery's visibility timeout must exceed a whole pack's handler time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from collections.abc import Sequence
from typing import Any

import redis

from barrierflow.broker.connection import sync_client
from barrierflow.broker.results import ClaimStatus, PutStatus, ResultKeys, ResultWriter, TaskCopy
from barrierflow.engine.dispatch import LocalDispatcher, SuperstepWork
from barrierflow.engine.errors import (
    CheckpointDecodeError,
    GraphSignatureMismatchError,
    SerializationError,
    WorkflowError,
)
from barrierflow.engine.graph import Graph
from barrierflow.engine.log_context import set_log_context
from barrierflow.engine.outcome import unencodable_effect
from barrierflow.engine.registry import workflow_factory
from barrierflow.engine.tracing import Tracing, tracer

from .app import app
from .config import PACK_TASK_NAME, TASK_NAME, TRACEPARENT, TRACEPARENTS
from .wire import (
    LAYOUT,
    TaskEnvelope,
    TaskResult,
    decode_body,
    decode_envelope,
    encode_result,
    layout_mismatch,
)

logger = logging.getLogger("barrierflow.workers")

#: Seconds a finished copy's result may wait to be written with those of the next copies of its pack.
RESULT_FLUSH = 0.05


class WorkerProcess:
    """Per-process state of a worker: built graphs by workflow name, an event loop, a Redis client.

    Created lazily in the process that runs tasks (a prefork child), never inherited across a fork.
    ``barrierflow.testing`` makes one over fakeredis to run tasks in a test process through this same code.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.pid = os.getpid()
        self.name = f"{socket.gethostname()}:{self.pid}"
        self.graphs: dict[str, Graph] = {}
        self.loop = asyncio.new_event_loop()
        self.writer = ResultWriter(client)

    def close(self) -> None:
        self.loop.close()
        self.writer.client.close()

    def graph(self, name: str) -> Graph:
        graph = self.graphs.get(name)
        if graph is None:
            graph = self.graphs[name] = workflow_factory(name)().build_graph()
        return graph

    def handle(self, payload: bytes, traceparent: str | None = None) -> str:
        """Run one copy of a task; what became of it. ``traceparent``: its trace context (the task header)."""
        return self.handle_pack([payload], strict=True, traceparents=[traceparent])[0]

    def handle_pack(
        self,
        payloads: Sequence[bytes],
        *,
        strict: bool = False,
        traceparents: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Run a pack of task copies, of any instances and supersteps; what became of each.

        Each copy is fenced on its own, exactly as if it came alone: a copy whose run's lease ended, whose
        superstep was collected or which runs elsewhere is skipped, and the others of the pack run. The claims
        of the whole pack are taken in one round trip; a finished copy's result is written, with its claim's
        release, together with the others finished within ``RESULT_FLUSH`` seconds. Copies run one after
        another, in the pack's order. ``strict``: an undecodable payload raises (else it is logged and skipped).
        ``traceparents``: each copy's trace context (its coordinator's superstep span), when tracing is on.
        """
        outcome = ["skipped: undecodable"] * len(payloads)
        taken: list[tuple[int, TaskEnvelope, TaskCopy]] = []
        for i, payload in enumerate(payloads):
            try:
                envelope = decode_envelope(payload)
            except CheckpointDecodeError:
                if strict:
                    raise
                logger.error(
                    "copy %d of a pack of %d skipped: not a barrierflow task payload", i, len(payloads)
                )
                continue
            keys = ResultKeys(
                envelope.prefix, envelope.instance_id, envelope.run_id, envelope.epoch, envelope.superstep
            )
            copy = TaskCopy(
                keys,
                envelope.task,
                envelope.token,
                envelope.epoch,
                envelope.send,
                envelope.claim_ttl,
                envelope.result_ttl,
            )
            taken.append((i, envelope, copy))
        statuses, claims = self.writer.claim_many([copy for _, _, copy in taken], flush_after=RESULT_FLUSH)
        ran: dict[int, tuple[int, TaskEnvelope]] = {}  # id of a claimed copy -> its index and envelope
        try:
            for (i, envelope, copy), status in zip(taken, statuses, strict=True):
                if isinstance(status, Exception):  # that copy's claim call failed: it is not taken
                    if strict:
                        raise status
                    logger.error("copy %d of a pack of %d not claimed: %s", i, len(payloads), status)
                    outcome[i] = f"error: {status}"
                elif status is not ClaimStatus.CLAIMED:  # lease ended, done, collected, or running elsewhere
                    outcome[i] = f"skipped: {status.name.lower()}"
                else:
                    ran[id(copy)] = (i, envelope)
                    traced = traceparents[i] if traceparents is not None and i < len(traceparents) else None
                    claims.post(copy, self.result(envelope, traced))
        finally:
            claims.release()
        for copy, written in claims.written:
            i, envelope = ran[id(copy)]
            if isinstance(written, Exception):
                if strict:
                    raise written
                outcome[i] = f"error: {written}"
                continue
            outcome[i] = written.name.lower()
            if written is PutStatus.FENCED:
                logger.warning(
                    "result of task %d of superstep %d of %r (run %s, epoch %d) not written: the run's lease "
                    "ended; its coordinator has stopped or another run holds the instance",
                    envelope.task,
                    envelope.superstep,
                    envelope.instance_id,
                    envelope.run_id,
                    envelope.epoch,
                )
        return outcome

    def result(self, envelope: TaskEnvelope, traceparent: str | None = None) -> bytes:
        """Run a claimed copy: its encoded result (a refusal when it cannot run or its result cannot travel)."""
        set_log_context(
            run_id=envelope.run_id,
            instance_id=envelope.instance_id,
            trace_id=traceparent.split("-")[1] if traceparent and traceparent.count("-") == 3 else None,
        )
        result = self.run(envelope, traceparent)
        try:
            return encode_result(result)
        except SerializationError as exc:  # e.g. a handler sent a message of an unregistered type
            named = unencodable_effect(result.outcomes) or exc  # the words the in-process run uses
            return encode_result(self.refusal(envelope.task, named))

    def run(self, envelope: TaskEnvelope, traceparent: str | None = None) -> TaskResult:
        task = envelope.task
        try:
            if envelope.layout != LAYOUT:
                raise layout_mismatch(envelope.layout, "coordinator")
            graph = self.graph(envelope.workflow)
            if graph.signature != envelope.signature:
                raise GraphSignatureMismatchError(
                    f"workflow {envelope.workflow!r}: the coordinator planned superstep {envelope.superstep} "
                    f"of {envelope.instance_id!r} with graph signature {envelope.signature!r}, but worker "
                    f"{self.name} has graph signature {graph.signature!r}; deploy one definition of the "
                    "workflow to the coordinator and every worker"
                )
            batches, executor_states, shared_state = decode_body(envelope)
        except WorkflowError as exc:
            return self.refusal(task, exc)
        work = SuperstepWork(
            instance_id=envelope.instance_id,
            run_id=envelope.run_id,
            superstep=envelope.superstep,
            workflow_name=envelope.workflow,
            graph_signature=envelope.signature,
            batches=batches,
            shared_state=shared_state,
            executor_states=executor_states,
            lease_token=envelope.token,
            epoch=envelope.epoch,
            policies=graph.policies,  # retries and timeouts run here, inside the task
        )
        found = tracer()
        if found is not None:  # the coordinator's superstep span is the parent of this copy's deliver spans
            work.trace = Tracing.from_traceparent(found, traceparent)
        events: list[Any] = []
        try:
            ran = self.loop.run_until_complete(
                LocalDispatcher().run_superstep(graph.executors, work, events.append)
            )
        except Exception as exc:  # not a handler's failure (those come back in ``ran.failure``): a bug
            return self.refusal(task, exc)
        return TaskResult(task, ran.outcomes, events, ran.failure, worker=self.name)

    def refusal(self, task: int, exc: Exception) -> TaskResult:
        logger.error("task %d refused: %s: %s", task, type(exc).__name__, exc)
        message = str(exc)
        if not isinstance(exc, WorkflowError):
            message += "\n" + traceback.format_exc()
        return TaskResult(task, refused=(type(exc).__name__, message), worker=self.name)


_process: WorkerProcess | None = None


def worker_process() -> WorkerProcess:
    global _process
    if _process is None or _process.pid != os.getpid():
        _process = WorkerProcess(sync_client(app.conf.barrierflow_redis_url))
    return _process


@app.task(name=TASK_NAME, ignore_result=True, acks_late=True, reject_on_worker_lost=True, bind=True)
def run_batches(self: Any, payload: bytes) -> str:
    """Run one task of a superstep (see ``workers/wire.py`` for the payload) and write its result."""
    return worker_process().handle(payload, self.request.get(TRACEPARENT))


@app.task(name=PACK_TASK_NAME, ignore_result=True, acks_late=True, reject_on_worker_lost=True, bind=True)
def run_pack(self: Any, payloads: list[bytes]) -> list[str]:
    """Run a pack of task copies of several instances (``workers/dispatcher.py``: packing), each fenced alone."""
    return worker_process().handle_pack(payloads, traceparents=self.request.get(TRACEPARENTS))
