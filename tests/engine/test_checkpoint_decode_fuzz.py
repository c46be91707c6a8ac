"""Seeded fuzz of stored checkpoint records: every bad head or keyframe is a ``CheckpointDecodeError``.

The seeds are real records (a run paused with a fan-in half full, a pending request, shared and executor state).
Each case mutates one of them, at the byte level or structurally (a field dropped, replaced by a value of the
wrong shape, an element of a list or dict swapped), and loads it. A load must either raise
``CheckpointDecodeError`` or give a checkpoint that works: its messages, requests and buffers can be used and it
encodes again (what ``restore`` does with it). Anything else escaping is the bug this guards against.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from barrierflow.engine import (
    CheckpointDecodeError,
    Executor,
    MemoryStore,
    WorkflowBuilder,
    WorkflowContext,
    codec,
    handler,
    register_type,
)
from barrierflow.engine.checkpoint_format import decode_record, encode_full
from barrierflow.engine.events import request_info_event
from barrierflow.engine.instance_state import InstanceState
from barrierflow.engine.messages import PendingRequest

SEED = 20240917
CASES = 3000

ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1e300,
    -1e300,
    1e18,
    math.nan,
    math.inf,
    "",
    "x",
    b"\x00",
    [],
    [1],
    ["a", 1, None, None],
    {},
    {"a": 1},
    {1: [2]},
    ("t",),
    {"s"},
    PendingRequest("r", "e", None, str),
    PendingRequest(1, None, None, 3),  # type: ignore[arg-type]
]


@register_type
@dataclass
class Ask:
    text: str


class Fork(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        ctx.set_state("seen", [text])
        ctx.set_executor_state({"count": 1})
        await ctx.send_message(text)


class Left(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.request_info(Ask(text), str, request_id="q1")


class Right(Executor):
    @handler
    async def on(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(text.upper())


class Join(Executor):
    @handler
    async def on(self, texts: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(texts)


async def seed_records() -> list[tuple[bytes, bytes]]:
    store = MemoryStore()
    fork, left, right, join = Fork("fork"), Left("left"), Right("right"), Join("join")
    wf = (
        WorkflowBuilder(name="fuzzed", start_executor=fork)
        .add_fan_out_edges(fork, [left, right])
        .add_fan_in_edges([left, right], join)
        .build(instance_id="fuzz", store=store)
    )
    await wf.run("hello")  # pauses on q1 with right's message buffered for the join
    records = []
    for checkpoint_id in await store.list_ids("fuzz"):
        head, keyframe = await store.read_record(checkpoint_id)  # type: ignore[misc]
        assert keyframe is not None
        records.append((head, keyframe))
    return records


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del raw[rng.randrange(len(raw)) :]
    elif kind == 2:  # insert
        at = rng.randrange(len(raw))
        raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    else:  # delete a slice
        at = rng.randrange(len(raw))
        del raw[at : at + rng.randint(1, 4)]
    return bytes(raw)


def containers(value: Any, found: list[Any]) -> list[Any]:
    """Every list and dict inside ``value`` (records' field dicts are not reachable: they are objects)."""
    if isinstance(value, (list, dict)):
        found.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            containers(item, found)
    return found


def mutate_structure(rng: random.Random, record: Any) -> Any:
    """Change one place of a decoded record: drop a key, replace a value, or replace the whole thing."""
    if rng.random() < 0.02:
        return rng.choice(ODD_VALUES)
    target = rng.choice(containers(record, []))
    if isinstance(target, dict):
        if not target:
            target["x"] = rng.choice(ODD_VALUES)
            return record
        key = rng.choice(list(target))
        if rng.random() < 0.3:
            del target[key]
        else:
            target[key] = rng.choice(ODD_VALUES)
    elif target:
        index = rng.randrange(len(target))
        if rng.random() < 0.2:
            del target[index]
        else:
            target[index] = rng.choice(ODD_VALUES)
    else:
        target.append(rng.choice(ODD_VALUES))
    return record


def use(decoded: Any) -> None:
    """What the engine does with a loaded checkpoint; none of it may fail on a head that loaded."""
    cp = decoded.checkpoint
    state = InstanceState.from_decoded(decoded)
    state.run_state()
    for delivery in state.messages:
        hash((delivery.target_id, delivery.source_ids))
        if delivery.request is not None:
            request_info_event(delivery.request)
    for request in state.pending_requests.values():
        request_info_event(request)
    for buffer in state.fan_in_buffers.values():
        for source, messages in buffer.items():
            hash(source)
            list(messages)
    cp.created_at.isoformat()
    encode_full(cp)  # restore() writes a copy of what it loaded


def one_case(rng: random.Random, records: list[tuple[bytes, bytes]]) -> str:
    head, keyframe = rng.choice(records)
    if rng.random() < 0.3:
        if rng.random() < 0.7:
            head = mutate_bytes(rng, head)
        else:
            keyframe = mutate_bytes(rng, keyframe)
    elif rng.random() < 0.8:
        head = codec.encode(mutate_structure(rng, codec.decode(head)))
    else:
        keyframe = codec.encode(mutate_structure(rng, codec.decode(keyframe)))
    try:
        decoded = decode_record(head, keyframe)
    except CheckpointDecodeError:
        return "refused"
    use(decoded)
    return "loaded"


async def run_fuzz(cases: int = CASES, seed: int = SEED) -> Counter[str]:
    rng = random.Random(seed)
    records = await seed_records()
    outcomes: Counter[str] = Counter()
    for _ in range(cases):
        outcomes[one_case(rng, records)] += 1  # any other exception fails the test, with its case
    return outcomes


async def test_every_mutated_record_is_refused_as_a_decode_error_or_loads_and_works() -> None:
    outcomes = await run_fuzz()
    assert sum(outcomes.values()) == CASES
    assert outcomes["refused"] > CASES // 2  # the mutations do break most records...
    assert outcomes["loaded"] > 0  # ...and some (a changed message or state value) stay valid


async def test_the_cases_the_fuzz_found_are_decode_errors() -> None:
    (head, keyframe), *_ = await seed_records()
    fields = codec.decode(head)
    for key, value in [("at", 1e300), ("at", 1e18), ("at", math.nan), ("pending", [1]), ("messages", [[1]])]:
        broken = {**fields, key: value}
        try:
            decode_record(codec.encode(broken), keyframe)
        except CheckpointDecodeError as exc:
            assert repr(key) in str(exc) or "message" in str(exc)
        else:
            raise AssertionError(f"{key}={value!r} loaded")
    without_kf = {k: v for k, v in fields.items() if k != "kf"}
    try:
        decode_record(codec.encode(without_kf), keyframe)
    except CheckpointDecodeError as exc:
        assert "'kf' is missing" in str(exc)
    else:
        raise AssertionError("a head without 'kf' loaded")
    pending = {"q1": PendingRequest("q1", "left", None, 3)}  # type: ignore[arg-type]
    try:
        decode_record(codec.encode({**fields, "pending": pending}), keyframe)
    except CheckpointDecodeError as exc:
        assert "pending request 'q1'" in str(exc)
    else:
        raise AssertionError("a request whose response_type is 3 loaded")
