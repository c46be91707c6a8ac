"""A checkpoint's head can be summarised without the application's types (``barrierflow status`` without -I)."""

from __future__ import annotations

import msgpack
import pytest

from barrierflow.engine import Checkpoint, CheckpointDecodeError
from barrierflow.engine.checkpoint_format import (
    CheckpointSummary,
    decode_record,
    encode_full,
    summarize_head,
)
from barrierflow.engine.codec import EXT_DATACLASS
from barrierflow.engine.messages import Delivery


def _record_naming_an_unknown_type() -> tuple[bytes, bytes | None]:
    cp = Checkpoint("i@" + "0" * 20, "i", "flow", "sig", previous_checkpoint_id="i@" + "1" * 20, superstep=4)
    cp.messages = [Delivery("target", "placeholder", ("src",))]
    record = encode_full(cp)
    head = msgpack.unpackb(record.head, raw=False, strict_map_key=False)
    # as another process wrote it: the queued message is a dataclass this process never registered
    head["messages"][0][1] = [msgpack.ExtType(EXT_DATACLASS, b"elsewhere.Order"), {"n": 1}]
    head["pending"] = {"r1": [msgpack.ExtType(EXT_DATACLASS, b"elsewhere.Request"), {}]}
    return msgpack.packb(head, use_bin_type=True), record.keyframe


def test_a_head_naming_unregistered_types_is_summarised_but_not_decoded() -> None:
    head, keyframe = _record_naming_an_unknown_type()
    with pytest.raises(CheckpointDecodeError, match="elsewhere"):
        decode_record(head, keyframe)
    summary = summarize_head(head)
    assert (summary.checkpoint_id, summary.superstep, summary.epoch) == ("i@" + "0" * 20, 4, 0)
    assert summary.previous_checkpoint_id == "i@" + "1" * 20
    assert (summary.queued_messages, summary.pending_request_ids) == (1, ["r1"])
    assert summary.workflow_name == "flow"


def test_the_summary_of_a_decoded_checkpoint_is_the_same() -> None:
    cp = Checkpoint("i@" + "2" * 20, "i", "flow", "sig", superstep=2, messages=[Delivery("t", "m", ("s",))])
    assert summarize_head(encode_full(cp).head) == CheckpointSummary.of(cp)


@pytest.mark.parametrize(
    "head",
    [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"id": 5}), msgpack.packb({"id": "x"})],
    ids=["not msgpack", "not a map", "wrong type", "missing fields"],
)
def test_a_malformed_head_raises_a_decode_error(head: bytes) -> None:
    with pytest.raises(CheckpointDecodeError, match="checkpoint head"):
        summarize_head(head)
