"""The run queue's commands, run as real processes against a real coordinator process."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import json_lines, run_cli

pytestmark = pytest.mark.slow


def cli(redis_url: str, prefix: str, *args: str, timeout: float = 60):
    return run_cli(*args, "--redis", redis_url, "--prefix", prefix, timeout=timeout)


def test_submit_wait_follow_show_list_cancel_and_watch(
    redis_url, real_redis_prefix, coordinator_procs
) -> None:
    # no coordinator yet: a wait with a timeout gives up with exit code 5, and the run stays queued
    queued = cli(
        redis_url, real_redis_prefix, "submit", "bfw_loop", "--input", "3", "--wait", "0.5", "--json"
    )
    assert queued.returncode == 5, queued.stderr
    submitted = json_lines(queued.stdout)[0]
    assert submitted["type"] == "submitted" and "@" in submitted["run_id"]
    busy = cli(
        redis_url,
        real_redis_prefix,
        "submit",
        "bfw_loop",
        "--instance",
        submitted["instance_id"],
        "--reject-if-busy",
    )
    assert busy.returncode == 4 and "busy" in busy.stderr

    coordinator_procs.start("c1", "--lock-ttl", "3")
    waited = cli(redis_url, real_redis_prefix, "runs", "wait", submitted["run_id"], "--json")
    assert waited.returncode == 0, waited.stderr
    result = json_lines(waited.stdout)[-1]
    assert result["type"] == "result" and result["status"] == "idle" and result["outputs"][0] == "done at 6"

    followed = cli(
        redis_url,
        real_redis_prefix,
        "submit",
        "tests.workflows_for_workers:bfw_fan",
        "--input",
        '"a b"',
        "--follow",
    )
    assert followed.returncode == 0, followed.stderr
    lines = json_lines(followed.stdout)  # not a terminal: JSON lines
    types = [line["type"] for line in lines]
    assert types[0] == "submitted" and "executor_invoked" in types and types[-1] == "result"
    assert all(line["event_id"] and line["run_id"] == lines[0]["run_id"] for line in lines[1:-1])
    assert lines[-1]["outputs"] == ["A#1 B#2 a b", "a b"]

    shown = json.loads(cli(redis_url, real_redis_prefix, "runs", "show", lines[0]["run_id"], "--json").stdout)
    assert (
        shown["state"] == "completed"
        and shown["attempts"] == 1
        and shown["outputs"] == ["A#1 B#2 a b", "a b"]
    )
    listed = json_lines(cli(redis_url, real_redis_prefix, "runs", "list", "--json").stdout)
    assert [r["run_id"] for r in listed] == [lines[0]["run_id"], submitted["run_id"]]
    assert "outputs" not in listed[0] and listed[0]["state"] == "completed"  # a summary: `runs show` has them
    piped = cli(redis_url, real_redis_prefix, "runs", "list")  # not a terminal: JSON lines, ids whole
    assert [r["run_id"] for r in json_lines(piped.stdout)] == [r["run_id"] for r in listed]
    listed = json_lines(
        cli(redis_url, real_redis_prefix, "runs", "list", "--state", "failed", "--json").stdout
    )
    assert listed == []

    cancelled = cli(redis_url, real_redis_prefix, "runs", "cancel", submitted["run_id"], "--json")
    assert json.loads(cancelled.stdout) == {
        "type": "cancel",
        "run_id": submitted["run_id"],
        "cancelled": False,
    }

    watched = cli(redis_url, real_redis_prefix, "watch", submitted["instance_id"], "--no-follow", "--json")
    events = json_lines(watched.stdout)
    assert events[-1]["type"] == "run_ended" and events[-1]["data"]["state"] == "completed"
    middle = events[len(events) // 2]["event_id"]
    after = json_lines(
        cli(
            redis_url,
            real_redis_prefix,
            "watch",
            submitted["instance_id"],
            "--after",
            middle,
            "--no-follow",
            "--json",
        ).stdout
    )
    assert [e["event_id"] for e in after] == [e["event_id"] for e in events[len(events) // 2 + 1 :]]

    failed = cli(redis_url, real_redis_prefix, "submit", "no_such_workflow", "--input", "1", "--wait", "30")
    assert failed.returncode == 1 and "no_such_workflow" in failed.stderr
    unknown = cli(redis_url, real_redis_prefix, "runs", "show", "nobody@0123456789abcdef")
    assert unknown.returncode == 2 and "no run" in unknown.stderr
