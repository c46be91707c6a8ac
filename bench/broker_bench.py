"""Benchmark RedisStore against bare redis-py on the same connection; prints one JSON object per line.

    python bench/broker_bench.py [--url redis://127.0.0.1:6379/0] [--cycles 1000] [--rounds 50]

1. reservation: reserve+release cycles/s through RedisStore vs a bare ``SET NX PX`` + ``EVALSHA``
   compare-and-delete loop (target ratio >= 0.8);
2. checkpoint: fenced write and read of a checkpoint holding 1,000 queued messages vs bare ``msgpack.packb`` +
   ``SET`` / ``GET`` + ``unpackb`` of the same data as plain lists (target <= 1.5x the bare time);
3. delta: bytes written for a superstep of 1,000 executors where one changed (delta head) vs the keyframe.

It uses its own key prefix on the server (``BARRIERFLOW_REDIS_URL`` by default) and deletes its keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from barrierflow.broker import RedisStore
from barrierflow.engine.checkpoint import Checkpoint, new_checkpoint_id
from barrierflow.engine.checkpoint_format import (
    StateDelta,
    decode_record,
    encode_full,
    encode_record,
    head_fields,
)
from barrierflow.engine.messages import Delivery
from barrierflow.engine.store import new_token, owner_info

COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def best_rates(
    steps: dict[str, Callable[[], Awaitable[None]]], n: int, repeats: int = 5
) -> dict[str, float]:
    """Operations per second of each step: the best of ``repeats`` runs of ``n``, after a warm-up.

    The steps take turns within each repeat, so a load change on the machine hits all of them alike.
    """
    for step in steps.values():
        for _ in range(min(n, 100)):
            await step()
    best = dict.fromkeys(steps, 0.0)
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(n):
                await step()
            best[name] = max(best[name], n / (time.perf_counter() - start))
    return best


async def bench_reservation(store: RedisStore, client: Redis, prefix: str, cycles: int) -> None:
    owner = owner_info("bench")

    async def via_store() -> None:
        lease = await store.reserve("reserve-bench", new_token(), owner)
        await store.release(lease)

    bare_key = f"{prefix}:{{bare}}:lock"
    compare_and_delete = client.register_script(COMPARE_AND_DELETE)
    ttl_ms = int(store.lock_ttl * 1000)

    async def bare() -> None:
        token = new_token()
        await client.set(bare_key, token, nx=True, px=ttl_ms)
        await compare_and_delete(keys=[bare_key], args=[token])

    rates = await best_rates({"store": via_store, "bare": bare}, cycles)
    store_rate, bare_rate = rates["store"], rates["bare"]
    emit(
        bench="reservation_acquire_release",
        store_cycles_per_s=round(store_rate),
        bare_cycles_per_s=round(bare_rate),
        ratio=round(store_rate / bare_rate, 3),
        target="ratio >= 0.8",
    )


def queued_checkpoint(instance_id: str, n: int) -> Checkpoint:
    messages = [
        Delivery(
            f"executor-{i % 50}", {"text": f"message {i}", "n": i, "tags": ["a", "b"]}, (f"src-{i % 7}",)
        )
        for i in range(n)
    ]
    return Checkpoint(
        new_checkpoint_id(instance_id),
        instance_id,
        "bench",
        "sig",
        superstep=3,
        messages=messages,
        shared_state={"k": 1},
        executor_states={"executor-1": {"seen": 3}},
    )


def as_plain(cp: Checkpoint) -> dict[str, Any]:
    """The same content as plain msgpack-native values (what a bare implementation would pack)."""
    return {
        "id": cp.checkpoint_id,
        "instance": cp.instance_id,
        "step": cp.superstep,
        "messages": [[d.target_id, d.message, list(d.source_ids)] for d in cp.messages],
        "shared": cp.shared_state,
        "exec": cp.executor_states,
        "at": cp.created_at.timestamp(),
    }


async def bench_checkpoint(store: RedisStore, client: Redis, prefix: str, rounds: int) -> None:
    """End to end, then split: the codec (engine.codec vs plain msgpack) and the Redis I/O of the same bytes."""
    lease = await store.reserve("ckpt-bench", new_token(), owner_info("bench"))
    cp = queued_checkpoint("ckpt-bench", 1000)
    plain = as_plain(cp)
    record = encode_full(cp)
    bare_key = f"{prefix}:{{bare}}:ckpt"
    await client.set(bare_key, msgpack.packb(plain))

    async def store_write() -> None:
        await store.save_checkpoint(cp, lease=lease)

    async def store_read() -> None:
        await store.load_checkpoint(cp.checkpoint_id)

    async def bare_write() -> None:
        await client.set(bare_key, msgpack.packb(plain))

    async def bare_read() -> None:
        msgpack.unpackb(await client.get(bare_key))

    async def bare_records_write() -> None:  # like-for-like: a bare store also flattens the typed records
        await client.set(bare_key, msgpack.packb(as_plain(cp)))

    async def bare_records_read() -> None:
        fields = msgpack.unpackb(await client.get(bare_key))
        [Delivery(t, m, tuple(s)) for t, m, s in fields["messages"]]

    async def fenced_io_write() -> None:  # the store's Lua write of already-encoded bytes
        await store.write_record(record, lease)

    async def fenced_io_read() -> None:
        await store.read_record(cp.checkpoint_id)

    async def set_same_bytes() -> None:
        await client.set(bare_key + ":same", record.head)

    async def get_same_bytes() -> None:
        await client.get(bare_key + ":same")

    async def codec_encode() -> None:
        encode_full(cp)

    async def codec_decode() -> None:
        decode_record(record.head, record.keyframe)

    async def msgpack_pack() -> None:
        msgpack.packb(plain)

    packed = msgpack.packb(plain)

    async def msgpack_unpack() -> None:
        msgpack.unpackb(packed)

    steps = {
        "store_write": store_write,
        "store_read": store_read,
        "bare_write": bare_write,
        "bare_read": bare_read,
        "bare_records_write": bare_records_write,
        "bare_records_read": bare_records_read,
        "fenced_io_write": fenced_io_write,
        "fenced_io_read": fenced_io_read,
        "set_same_bytes": set_same_bytes,
        "get_same_bytes": get_same_bytes,
        "codec_encode": codec_encode,
        "codec_decode": codec_decode,
        "msgpack_pack": msgpack_pack,
        "msgpack_unpack": msgpack_unpack,
    }
    ms = {name: 1000 / rate for name, rate in (await best_rates(steps, rounds)).items()}
    await store.release(lease)
    emit(
        bench="checkpoint_1000_messages",
        store_write_ms=round(ms["store_write"], 3),
        bare_write_ms=round(ms["bare_write"], 3),
        write_ratio=round(ms["store_write"] / ms["bare_write"], 3),
        store_read_ms=round(ms["store_read"], 3),
        bare_read_ms=round(ms["bare_read"], 3),
        read_ratio=round(ms["store_read"] / ms["bare_read"], 3),
        total_ratio=round((ms["store_write"] + ms["store_read"]) / (ms["bare_write"] + ms["bare_read"]), 3),
        total_ratio_vs_bare_with_records=round(
            (ms["store_write"] + ms["store_read"]) / (ms["bare_records_write"] + ms["bare_records_read"]), 3
        ),
        head_bytes=len(record.head),
        bare_bytes=len(packed),
        target="ratio <= 1.5",
    )
    emit(
        bench="checkpoint_1000_messages_split",
        codec_encode_ms=round(ms["codec_encode"], 3),
        msgpack_pack_ms=round(ms["msgpack_pack"], 3),
        codec_decode_ms=round(ms["codec_decode"], 3),
        msgpack_unpack_ms=round(ms["msgpack_unpack"], 3),
        fenced_lua_write_ms=round(ms["fenced_io_write"], 3),
        set_same_bytes_ms=round(ms["set_same_bytes"], 3),
        lua_read_ms=round(ms["fenced_io_read"], 3),
        get_same_bytes_ms=round(ms["get_same_bytes"], 3),
        io_ratio=round(
            (ms["fenced_io_write"] + ms["fenced_io_read"]) / (ms["set_same_bytes"] + ms["get_same_bytes"]), 3
        ),
    )


async def bench_delta(store: RedisStore, client: Redis) -> None:
    instance = "delta-bench"
    states = {f"executor-{i:04d}": {"count": i, "history": list(range(20))} for i in range(1000)}
    base = Checkpoint(new_checkpoint_id(instance), instance, "bench", "sig", executor_states=states)
    await store.save_checkpoint(base)
    keyframe = await client.strlen(store.keys.keyframe(instance, base.checkpoint_id))
    sizes = []
    for step in range(1, 11):
        cp = Checkpoint(new_checkpoint_id(instance), instance, "bench", "sig", superstep=step)
        record = encode_record(
            head_fields(cp),
            keyframe_id=base.checkpoint_id,
            shared_delta=StateDelta(),
            executor_delta=StateDelta({"executor-0500": {"count": -step, "history": [step]}}),
            keyframe_state=None,
        )
        await store.write_record(record, None)
        assert record.keyframe is None
        sizes.append(await client.strlen(store.keys.head(instance, cp.checkpoint_id)))
    emit(
        bench="bytes_per_superstep_1000_executors_one_changed",
        delta_head_bytes=max(sizes),
        keyframe_bytes=keyframe,
        ratio=round(max(sizes) / keyframe, 5),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("BARRIERFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()

    prefix = f"bfbench-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(args.url)
    store = RedisStore(client, prefix=prefix, retention=50)
    emit(bench="setup", url=args.url.split("@")[-1], prefix=prefix, hiredis=store.uses_hiredis)
    try:
        await bench_reservation(store, client, prefix, args.cycles)
        await bench_checkpoint(store, client, prefix, args.rounds)
        await bench_delta(store, client)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
