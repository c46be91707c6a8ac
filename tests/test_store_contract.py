"""The store conformance suite: every ``Store`` (memory, Redis on fakeredis, on a real server) passes it.

Most tests take the ``store`` fixture of ``conftest.py``; those that need other options (a short lease TTL, a
small retention) build one of the same kind with ``make_store``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from barrierflow.engine.checkpoint import Checkpoint, new_checkpoint_id
from barrierflow.engine.checkpoint_format import CheckpointRecord, StateDelta, encode_record, head_fields
from barrierflow.engine.errors import (
    CheckpointNotFoundError,
    ReservationLostError,
    WorkflowRunInProgressError,
)
from barrierflow.engine.memory_store import MemoryStore
from barrierflow.engine.messages import Delivery, PendingRequest
from barrierflow.engine.store import Lease, Store, new_token, owner_info

from .conftest import MakeStore


async def keyframe_exists(store: Store, instance_id: str, keyframe_id: str) -> bool:
    """White-box probe: whether the store still keeps a keyframe's bytes."""
    if isinstance(store, MemoryStore):
        return keyframe_id in store._keyframes
    return bool(await store.client.exists(store.keys.keyframe(instance_id, keyframe_id)))


def checkpoint(instance_id: str, **fields: Any) -> Checkpoint:
    return Checkpoint(new_checkpoint_id(instance_id), instance_id, "contract", "sig-1", **fields)


def record(
    instance_id: str,
    keyframe_id: str | None,
    executor_changes: dict[str, Any] | None = None,
    *,
    keyframe_state: dict[str, Any] | None = None,
) -> CheckpointRecord:
    """A head naming ``keyframe_id`` with these executor-state changes, or (keyframe_state) a new keyframe."""
    cp = checkpoint(instance_id)
    if keyframe_state is not None:
        return encode_record(
            head_fields(cp),
            keyframe_id=cp.checkpoint_id,
            shared_delta=StateDelta(),
            executor_delta=StateDelta(),
            keyframe_state=({}, keyframe_state),
        )
    assert keyframe_id is not None
    return encode_record(
        head_fields(cp),
        keyframe_id=keyframe_id,
        shared_delta=StateDelta(),
        executor_delta=StateDelta(dict(executor_changes or {})),
        keyframe_state=None,
    )


# -- reservation ---------------------------------------------------------------------------------------------


async def test_second_token_is_refused_with_the_owner(store: Store) -> None:
    lease = await store.reserve("inst", new_token(), owner_info("run-a"))
    with pytest.raises(WorkflowRunInProgressError) as caught:
        await store.reserve("inst", new_token(), owner_info("run-b"))
    assert "inst" in str(caught.value)
    assert caught.value.owner is not None
    assert caught.value.owner["run_id"] == "run-a"
    assert {"host", "pid", "since"} <= caught.value.owner.keys()
    assert await store.release(lease)


async def test_epoch_grows_by_one_on_every_reserve_and_survives_release(store: Store) -> None:
    epochs = []
    for _ in range(3):
        lease = await store.reserve("inst", new_token(), owner_info("run"))
        epochs.append(lease.epoch)
        assert await store.release(lease)
    assert epochs == [epochs[0], epochs[0] + 1, epochs[0] + 2]
    info = await store.describe("inst")
    assert not info.held
    assert info.epoch == epochs[-1]


async def test_release_is_compare_and_delete(store: Store) -> None:
    holder = await store.reserve("inst", new_token(), owner_info("run-a"))
    stranger = Lease("inst", new_token(), holder.epoch, holder.ttl)
    assert await store.release(stranger) is False
    assert (await store.describe("inst")).held
    assert await store.renew(holder)
    assert await store.release(holder) is True
    assert await store.release(holder) is False  # a second release changes nothing
    assert not (await store.describe("inst")).held


async def test_renew_fails_and_marks_the_lease_lost_once_released(store: Store) -> None:
    lease = await store.reserve("inst", new_token(), owner_info("run"))
    assert await store.renew(lease) is True
    assert not lease.lost
    await store.release(lease)
    assert await store.renew(lease) is False
    assert lease.lost


async def test_lease_expires_after_its_ttl(make_store: MakeStore) -> None:
    store = make_store(lock_ttl=0.2)
    first = await store.reserve("inst", new_token(), owner_info("run-a"))
    await asyncio.sleep(0.3)
    assert not (await store.describe("inst")).held
    second = await store.reserve("inst", new_token(), owner_info("run-b"))
    assert second.epoch == first.epoch + 1
    assert await store.renew(first) is False
    assert first.lost
    assert await store.release(first) is False
    info = await store.describe("inst")
    assert info.held
    assert info.owner["run_id"] == "run-b"


async def test_renewal_keeps_a_lease_past_its_ttl(make_store: MakeStore) -> None:
    store = make_store(lock_ttl=0.3)
    lease = await store.reserve("inst", new_token(), owner_info("run-a"))
    for _ in range(6):  # 0.6 s: twice the TTL
        await asyncio.sleep(0.1)
        assert await store.renew(lease)
    with pytest.raises(WorkflowRunInProgressError):
        await store.reserve("inst", new_token(), owner_info("run-b"))
    assert await store.release(lease)


async def test_describe_tells_holder_ttl_and_epoch(store: Store) -> None:
    idle = await store.describe("inst")
    assert (idle.instance_id, idle.held, idle.epoch, idle.ttl_left, idle.owner) == (
        "inst",
        False,
        0,
        None,
        {},
    )
    owner = owner_info("run-a")
    lease = await store.reserve("inst", new_token(), owner)
    info = await store.describe("inst")
    assert info.held
    assert info.epoch == lease.epoch
    assert info.ttl_left is not None
    assert 0 < info.ttl_left <= store.lock_ttl
    assert info.owner == owner
    await store.release(lease)


# -- fenced writes -------------------------------------------------------------------------------------------


async def test_write_with_a_lost_lease_raises_and_writes_nothing(make_store: MakeStore) -> None:
    store = make_store(lock_ttl=0.2)
    old = await store.reserve("inst", new_token(), owner_info("run-a"))
    await store.save_checkpoint(checkpoint("inst", superstep=1), lease=old)
    await asyncio.sleep(0.3)
    new = await store.reserve("inst", new_token(), owner_info("run-b"))
    newer_cp = checkpoint("inst", superstep=2)
    await store.save_checkpoint(newer_cp, lease=new)
    before = await store.list_ids("inst")

    stale_cp = checkpoint("inst", superstep=3)
    with pytest.raises(ReservationLostError):
        await store.save_checkpoint(stale_cp, lease=old)
    assert old.lost
    assert await store.list_ids("inst") == before
    assert await store.latest_id("inst") == newer_cp.checkpoint_id
    with pytest.raises(CheckpointNotFoundError):
        await store.load_checkpoint(stale_cp.checkpoint_id)


async def test_same_token_at_an_older_epoch_is_fenced_out(store: Store) -> None:
    """A retried acquire with the same token gets the next epoch; the older lease must not write, renew or release.

    The token alone cannot tell them apart: only the epoch does.
    """
    token = new_token()
    old = await store.reserve("inst", token, owner_info("run"))
    new = await store.reserve("inst", token, owner_info("run"))
    assert new.epoch == old.epoch + 1
    with pytest.raises(ReservationLostError, match="inst"):
        await store.save_checkpoint(checkpoint("inst"), lease=old)
    assert old.lost
    assert await store.list_ids("inst") == []
    assert await store.renew(old) is False
    assert await store.release(old) is False
    assert (await store.describe("inst")).held  # the newer lease is untouched...
    await store.save_checkpoint(checkpoint("inst"), lease=new)  # ...and writes
    assert await store.release(new) is True


async def test_write_after_release_is_refused(store: Store) -> None:
    lease = await store.reserve("inst", new_token(), owner_info("run"))
    await store.release(lease)
    with pytest.raises(ReservationLostError):
        await store.save_checkpoint(checkpoint("inst"), lease=lease)
    assert await store.list_ids("inst") == []


async def test_save_without_a_lease_is_unfenced(store: Store) -> None:
    lease = await store.reserve("inst", new_token(), owner_info("run"))
    cp = checkpoint("inst")
    await store.save_checkpoint(cp)
    assert await store.latest_id("inst") == cp.checkpoint_id
    await store.release(lease)


# -- checkpoints ---------------------------------------------------------------------------------------------


async def test_save_load_list_latest_delete(store: Store) -> None:
    assert await store.list_ids("inst") == []
    assert await store.latest_id("inst") is None
    assert await store.latest_checkpoint("inst") is None
    cps = [checkpoint("inst", superstep=i, shared_state={"i": i}) for i in range(3)]
    for cp in cps:
        await store.save_checkpoint(cp)
    await store.save_checkpoint(checkpoint("other"))

    ids = [cp.checkpoint_id for cp in cps]
    assert await store.list_ids("inst") == ids[::-1]
    assert [cp.superstep for cp in await store.list_checkpoints("inst")] == [2, 1, 0]
    assert await store.latest_id("inst") == ids[2]
    latest = await store.latest_checkpoint("inst")
    assert latest is not None
    assert latest.shared_state == {"i": 2}
    assert (await store.load_checkpoint(ids[1])).superstep == 1

    assert await store.delete_checkpoint(ids[1]) is True
    assert await store.delete_checkpoint(ids[1]) is False
    assert await store.list_ids("inst") == [ids[2], ids[0]]
    with pytest.raises(CheckpointNotFoundError):
        await store.load_checkpoint(ids[1])
    assert await store.delete_checkpoint(ids[2])
    assert await store.latest_id("inst") == ids[0]
    assert len(await store.list_ids("other")) == 1


async def test_unknown_and_foreign_checkpoint_ids(store: Store) -> None:
    with pytest.raises(CheckpointNotFoundError):
        await store.load_checkpoint(new_checkpoint_id("inst"))
    with pytest.raises(CheckpointNotFoundError):
        await store.load_checkpoint("not-a-barrierflow-id")
    assert await store.delete_checkpoint("not-a-barrierflow-id") is False
    assert await store.delete_checkpoint(new_checkpoint_id("inst")) is False


async def test_rewriting_a_checkpoint_id_makes_it_newest_once(store: Store) -> None:
    first, second = checkpoint("inst", superstep=1), checkpoint("inst", superstep=2)
    await store.save_checkpoint(first)
    await store.save_checkpoint(second)
    first.metadata = {"rewritten": True}
    await store.save_checkpoint(first)
    assert await store.list_ids("inst") == [first.checkpoint_id, second.checkpoint_id]
    assert (await store.load_checkpoint(first.checkpoint_id)).metadata == {"rewritten": True}


async def test_full_checkpoint_round_trips(store: Store) -> None:
    request = PendingRequest("req-1", "reviewer", {"question": "ok?"}, str)
    cp = Checkpoint(
        checkpoint_id=new_checkpoint_id("inst"),
        instance_id="inst",
        workflow_name="review",
        graph_signature="sig-abc",
        previous_checkpoint_id=new_checkpoint_id("inst"),
        superstep=7,
        messages=[
            Delivery("upper", "hello", ("__input__",)),
            Delivery("join", [1, 2.5, None, b"\x00bytes"], ("a", "b")),
            Delivery("reviewer", "yes", ("outside",), request),
        ],
        shared_state={"count": 3, "tags": ["x", "y"], "nested": {"k": (1, 2)}},
        executor_states={"upper": {"seen": 4}, "join": None},
        fan_in_buffers={"join": {"a": ["from a"], "b": [1, 2]}},
        pending_requests={"req-1": request},
        run_id="run-1",
        epoch=12,
        created_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        metadata={"note": "round trip"},
    )
    await store.save_checkpoint(cp)
    assert await store.load_checkpoint(cp.checkpoint_id) == cp
    assert await store.latest_checkpoint("inst") == cp


async def test_delta_heads_apply_to_their_keyframe(store: Store) -> None:
    base = {f"ex{i}": i for i in range(10)}
    key = record("inst", None, keyframe_state=base)
    await store.write_record(key, None)
    delta = record("inst", key.keyframe_id, {"ex3": "changed", "new": 1})
    await store.write_record(delta, None)
    decoded = await store.load_decoded(delta.checkpoint_id)
    assert decoded.keyframe_id == key.keyframe_id
    assert decoded.executor_delta.sets == {"ex3": "changed", "new": 1}
    assert decoded.checkpoint.executor_states == {**base, "ex3": "changed", "new": 1}
    assert (await store.load_checkpoint(key.checkpoint_id)).executor_states == base


async def test_retention_keeps_the_newest_and_their_keyframes(make_store: MakeStore) -> None:
    store = make_store(retention=3)
    key = record("inst", None, keyframe_state={"a": 0})
    heads = [key] + [record("inst", key.keyframe_id, {"a": n}) for n in range(1, 5)]
    for head in heads:
        await store.write_record(head, None)
    ids = [head.checkpoint_id for head in heads]
    assert await store.list_ids("inst") == ids[:1:-1]
    for gone in ids[:2]:
        with pytest.raises(CheckpointNotFoundError):
            await store.load_checkpoint(gone)
    # the keyframe's own head is gone, but kept heads still name the keyframe
    assert await keyframe_exists(store, "inst", key.keyframe_id)
    assert [cp.executor_states for cp in await store.list_checkpoints("inst")] == [
        {"a": 4},
        {"a": 3},
        {"a": 2},
    ]


async def test_retention_deletes_keyframes_no_head_names(make_store: MakeStore) -> None:
    store = make_store(retention=3)
    first = record("inst", None, keyframe_state={"a": 1})
    second = record("inst", first.keyframe_id, {"a": 2})
    third = record("inst", None, keyframe_state={"a": 3})
    later = [record("inst", third.keyframe_id, {"a": n}) for n in (4, 5)]
    for head in [first, second, third, *later]:
        await store.write_record(head, None)
    assert await store.list_ids("inst") == [
        later[1].checkpoint_id,
        later[0].checkpoint_id,
        third.checkpoint_id,
    ]
    assert not await keyframe_exists(store, "inst", first.keyframe_id)
    assert await keyframe_exists(store, "inst", third.keyframe_id)
    assert (await store.load_checkpoint(later[1].checkpoint_id)).executor_states == {"a": 5}


async def test_delete_keeps_a_keyframe_until_its_last_head_goes(store: Store) -> None:
    key = record("inst", None, keyframe_state={"a": 1})
    delta = record("inst", key.keyframe_id, {"a": 2})
    await store.write_record(key, None)
    await store.write_record(delta, None)
    assert await store.delete_checkpoint(key.checkpoint_id)
    assert await keyframe_exists(store, "inst", key.keyframe_id)
    assert (await store.load_checkpoint(delta.checkpoint_id)).executor_states == {"a": 2}
    assert await store.delete_checkpoint(delta.checkpoint_id)
    assert not await keyframe_exists(store, "inst", key.keyframe_id)


async def test_a_checkpoint_with_an_id_of_the_users_own_is_saved_found_listed_and_deleted(
    store: Store,
) -> None:
    cp = Checkpoint(
        checkpoint_id="my-own-id-1",
        instance_id="own-ids",
        workflow_name="wf",
        graph_signature="sig",
        superstep=4,
        messages=[Delivery("b", {"n": 1}, ("a",))],
        shared_state={"k": "v"},
        executor_states={"a": 3},
    )
    await store.save_checkpoint(cp)
    loaded = await store.load_checkpoint("my-own-id-1")
    assert (loaded.instance_id, loaded.superstep, loaded.shared_state, loaded.executor_states) == (
        "own-ids",
        4,
        {"k": "v"},
        {"a": 3},
    )
    assert loaded.messages == cp.messages
    assert [c.checkpoint_id for c in await store.list_checkpoints("own-ids")] == ["my-own-id-1"]
    assert await store.delete_checkpoint("my-own-id-1")
    assert not await store.delete_checkpoint("my-own-id-1")
    with pytest.raises(CheckpointNotFoundError):
        await store.load_checkpoint("my-own-id-1")
    assert await store.list_checkpoints("own-ids") == []
