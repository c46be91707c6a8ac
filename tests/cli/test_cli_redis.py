"""``barrierflow`` against the real Redis: checkpoints, status, restore, reset, and requests answered by a
second command (CliRunner and real subprocesses)."""

from __future__ import annotations

import asyncio
import shlex

import pytest
from typer.testing import CliRunner

from barrierflow.cli.main import app
from tests.cli.conftest import barrierflow_argv, json_lines, run_cli

APPROVAL = "examples.approval_flow:approval_flow"
TEXT = "examples.text_pipeline:text_pipeline"


@pytest.fixture
def opts(redis_url: str, real_redis_prefix: str) -> list[str]:
    return ["--redis", redis_url, "--prefix", real_redis_prefix]


def run_json(cli: CliRunner, *argv: str) -> list[dict]:
    result = cli.invoke(app, list(argv))
    assert result.exit_code == 0, result.output
    return json_lines(result.stdout)


def test_checkpoints_list_show_delete_after_a_run(cli: CliRunner, opts: list[str]) -> None:
    records = run_json(cli, "run", TEXT, "--input", '"hello"', "--instance", "t1", *opts)
    assert records[-1]["outputs"] == ["OLLEH"]
    created = [r["data"] for r in records if r["type"] == "checkpoint_created"]

    listed = json_lines(cli.invoke(app, ["checkpoints", "list", "t1", *opts, "--json"]).stdout)
    assert [c["checkpoint_id"] for c in listed] == created[::-1]  # newest first
    assert [c["superstep"] for c in listed] == [2, 1, 0]
    assert [c["queued_messages"] for c in listed] == [0, 1, 1]
    assert listed[0]["previous_checkpoint_id"] == listed[1]["checkpoint_id"]
    assert {c["workflow_name"] for c in listed} == {"text_pipeline"}

    piped = cli.invoke(app, ["checkpoints", "list", "t1", *opts])  # not a terminal: JSON lines, ids whole
    assert [c["checkpoint_id"] for c in json_lines(piped.stdout)] == created[::-1]
    table = cli.invoke(app, ["checkpoints", "list", "t1", *opts, "--pretty"], env={"COLUMNS": "250"})
    assert table.exit_code == 0
    assert all(cid in table.stdout for cid in created)

    [shown] = json_lines(cli.invoke(app, ["checkpoints", "show", created[1], *opts, "--json"]).stdout)
    assert shown["checkpoint_id"] == created[1]
    assert shown["messages"] == [
        {"target_id": "reverse", "message": "HELLO", "source_ids": ["upper"], "request": None}
    ]

    deleted = cli.invoke(app, ["checkpoints", "delete", created[0], *opts])
    assert deleted.exit_code == 0
    assert f"deleted {created[0]}" in deleted.stdout
    again = cli.invoke(app, ["checkpoints", "delete", created[0], *opts])
    assert again.exit_code == 2
    assert "no such checkpoint" in again.stderr
    remaining = json_lines(cli.invoke(app, ["checkpoints", "list", "t1", *opts, "--json"]).stdout)
    assert [c["checkpoint_id"] for c in remaining] == [created[2], created[1]]

    missing = cli.invoke(app, ["checkpoints", "show", "t1@" + "0" * 20, *opts])
    assert missing.exit_code == 2
    assert "checkpoints list INSTANCE" in missing.stderr
    empty = cli.invoke(app, ["checkpoints", "list", "nobody", *opts, "--pretty"])
    assert empty.exit_code == 0
    assert "no checkpoints of instance 'nobody'" in empty.stdout
    assert cli.invoke(app, ["checkpoints", "list", "nobody", *opts]).stdout == ""


def test_checkpoint_ids_are_never_wrapped_on_a_narrow_terminal(cli: CliRunner, opts: list[str]) -> None:
    """``show`` and ``restore`` need the whole id: on 80 columns each id stays on one line, in one piece."""
    instance = "a-rather-long-instance-name-for-80-columns"
    run_json(cli, "run", APPROVAL, "--input", '"docs"', "--instance", instance, *opts)
    listed = json_lines(cli.invoke(app, ["checkpoints", "list", instance, *opts]).stdout)
    ids = [c["checkpoint_id"] for c in listed]
    assert len(ids) == 3 and all(len(cid) > 60 for cid in ids)

    table = cli.invoke(
        app,
        ["checkpoints", "list", instance, *opts, "--pretty", "-I", "examples.approval_flow"],
        env={"COLUMNS": "80"},
    )
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for cid in ids:
        assert any(cid in line for line in lines), f"{cid} is not whole on one line:\n{table.stdout}"


def test_prefix_and_redis_url_come_from_the_environment(redis_url: str, real_redis_prefix: str) -> None:
    env = {"BARRIERFLOW_REDIS_URL": redis_url, "BARRIERFLOW_PREFIX": real_redis_prefix}
    first = run_cli("run", TEXT, "--input", '"env"', "--instance", "e1", "--redis", redis_url, env=env)
    assert first.returncode == 0, first.stderr
    listed = run_cli("checkpoints", "list", "e1", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [c["superstep"] for c in json_lines(listed.stdout)] == [2, 1, 0]


def test_request_and_answer_through_two_commands(
    redis_url: str, real_redis_prefix: str, opts: list[str]
) -> None:
    first = run_cli("run", APPROVAL, "--input", '"release notes"', "--instance", "notes-1", *opts)
    assert first.returncode == 0, first.stderr
    records = json_lines(first.stdout)
    [pending] = [r for r in records if r["type"] == "pending_request"]
    assert records[-1]["status"] == "idle_with_pending_requests"
    request_id = pending["request_id"]
    command = pending["command"]
    assert command == shlex.join(
        [
            "barrierflow",
            "run",
            APPROVAL,
            "--instance",
            "notes-1",
            "--redis",
            redis_url,
            "--prefix",
            real_redis_prefix,
            "--respond",
            f"{request_id}=true",
        ]
    )

    # Reject first (the same command with another answer): the writer revises and the reviewer asks again.
    argv = shlex.split(command)
    reject = run_cli(*argv[1:-1], f"{request_id}=false")
    assert reject.returncode == 0, reject.stderr
    [second] = [r for r in json_lines(reject.stdout) if r["type"] == "pending_request"]
    assert second["data"]["draft"]["revision"] == 2

    # Then run the printed command exactly as printed.
    approve = run_cli(*shlex.split(second["command"])[1:])
    assert approve.returncode == 0, approve.stderr
    done = json_lines(approve.stdout)[-1]
    assert done["status"] == "idle"
    assert done["outputs"] == [
        {
            "topic": "release notes",
            "published": True,
            "revision": 2,
            "text": "Release notes: revision 2, tightened after review.",
        }
    ]
    assert done["pending_requests"] == []


def test_pretty_output_prints_the_answering_command(cli: CliRunner, opts: list[str]) -> None:
    result = cli.invoke(
        app,
        ["run", APPROVAL, "--input", '"docs"', "--instance", "p1", *opts, "--pretty"],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    assert "answer with:" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "barrierflow run" in line)
    assert shlex.split(line.strip())[:6] == ["barrierflow", "run", APPROVAL, "--instance", "p1", "--redis"]


def test_wrong_answers_are_refused_before_anything_runs(cli: CliRunner, opts: list[str]) -> None:
    records = run_json(cli, "run", APPROVAL, "--input", '"docs"', "--instance", "w1", *opts)
    [request_id] = records[-1]["pending_requests"]

    unknown = cli.invoke(app, ["run", APPROVAL, "--instance", "w1", *opts, "--respond", "nope=true"])
    assert unknown.exit_code == 2
    assert "unknown request: no pending request 'nope' on 'w1'" in unknown.stderr
    assert request_id in unknown.stderr

    wrong_type = cli.invoke(
        app, ["run", APPROVAL, "--instance", "w1", *opts, "--respond", f'{request_id}="yes"']
    )
    assert wrong_type.exit_code == 2
    assert "expected bool, got a string" in wrong_type.stderr

    no_instance = cli.invoke(app, ["run", APPROVAL, *opts, "--respond", f"{request_id}=true"])
    assert no_instance.exit_code == 2
    assert "--instance ID" in no_instance.stderr

    other_graph = cli.invoke(app, ["run", TEXT, "--instance", "w1", *opts, "--respond", f"{request_id}=true"])
    assert other_graph.exit_code == 4
    assert "signature" in other_graph.stderr

    still = json_lines(
        cli.invoke(app, ["status", "w1", *opts, "-I", "examples.approval_flow", "--json"]).stdout
    )
    assert [p["request_id"] for p in still[0]["pending_requests"]] == [request_id]


def test_status_reports_lock_epoch_checkpoint_and_pending_requests(
    cli: CliRunner, opts: list[str], redis_url: str, real_redis_prefix: str
) -> None:
    records = run_json(cli, "run", APPROVAL, "--input", '"docs"', "--instance", "s1", *opts)
    [request_id] = records[-1]["pending_requests"]

    [status] = json_lines(
        cli.invoke(app, ["status", "s1", *opts, "-I", "examples.approval_flow", "--json"]).stdout
    )
    assert status["lock"] == {"held": False, "owner": None, "ttl_left": None}
    assert status["epoch"] == 1
    assert status["state"] == "idle_with_pending_requests"
    assert status["latest_checkpoint"]["checkpoint_id"] == records[-1]["checkpoint_id"]
    [pending] = status["pending_requests"]
    assert pending["request_id"] == request_id
    assert pending["response_type"] == "bool"
    assert pending["command"].startswith(f"barrierflow run {APPROVAL} --instance s1 --redis ")
    assert pending["command"].endswith(f"--respond {request_id}=true")

    # Without the module that defines the request type, the request cannot be decoded: everything else is still
    # shown, and what was not decoded is named. (A fresh process: this one has imported the examples already.)
    undecodable = run_cli("status", "s1", *opts, "--json")
    assert undecodable.returncode == 0, undecodable.stderr
    [partial] = json_lines(undecodable.stdout)
    assert partial["lock"]["held"] is False and partial["epoch"] == 1
    assert partial["state"] == "idle_with_pending_requests"
    assert partial["latest_checkpoint"]["checkpoint_id"] == status["latest_checkpoint"]["checkpoint_id"]
    assert partial["latest_checkpoint"]["superstep"] == status["latest_checkpoint"]["superstep"]
    assert "examples.approval_flow.ApprovalRequest" in partial["undecoded"]
    assert "-I MODULE" in partial["undecoded"]
    assert [p["request_id"] for p in partial["pending_requests"]] == [request_id]
    assert partial["pending_requests"][0]["command"].endswith(f"--respond '{request_id}=<JSON>'")
    shown = run_cli("status", "s1", *opts, env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert status["latest_checkpoint"]["checkpoint_id"] in shown.stdout
    assert f"superstep {status['latest_checkpoint']['superstep']}" in shown.stdout
    assert "undecoded" in shown.stdout and "ApprovalRequest" in shown.stdout
    assert "Traceback" not in shown.stderr

    # While another run holds the lease: status names it, and a run on the instance is refused with exit 4.
    from barrierflow.broker import RedisStore

    async def hold():
        store = RedisStore.from_url(redis_url, prefix=real_redis_prefix, lock_ttl=60)
        lease = await store.reserve("s1", "tok", {"run_id": "other-run", "host": "h1", "pid": 42})
        await store.aclose()
        return lease

    asyncio.run(hold())
    [held] = json_lines(
        cli.invoke(app, ["status", "s1", *opts, "-I", "examples.approval_flow", "--json"]).stdout
    )
    assert held["lock"]["held"] is True
    assert held["lock"]["owner"]["run_id"] == "other-run"
    assert 0 < held["lock"]["ttl_left"] <= 60
    assert held["epoch"] == 2
    assert held["state"] == "running"
    busy = cli.invoke(app, ["run", APPROVAL, "--instance", "s1", *opts, "--respond", f"{request_id}=true"])
    assert busy.exit_code == 4
    assert "other-run" in busy.stderr

    pretty = cli.invoke(app, ["status", "s1", *opts, "-I", "examples.approval_flow"], env={"COLUMNS": "200"})
    assert pretty.exit_code == 0
    assert "held by run other-run (host h1, pid 42)" in pretty.stdout

    unknown = json_lines(cli.invoke(app, ["status", "nobody", *opts, "--json"]).stdout)
    assert unknown[0]["state"] == "unknown instance"
    assert unknown[0]["latest_checkpoint"] is None


def test_restore_then_continue_and_resume_from_checkpoint(cli: CliRunner, opts: list[str]) -> None:
    records = run_json(cli, "run", TEXT, "--input", '"abc"', "--instance", "r1", *opts)
    after_upper = [r["data"] for r in records if r["type"] == "checkpoint_created"][1]

    restored = cli.invoke(app, ["restore", TEXT, after_upper, *opts])
    assert restored.exit_code == 0, restored.output
    assert f"restored {after_upper} into instance r1" in restored.stdout
    assert "continue it with: barrierflow run" in restored.stdout
    [latest] = json_lines(cli.invoke(app, ["checkpoints", "list", "r1", *opts, "--json"]).stdout)[:1]
    assert latest["previous_checkpoint_id"] == after_upper
    assert latest["metadata"] == {"restored_from": after_upper}
    assert latest["queued_messages"] == 1

    continued = run_json(cli, "run", TEXT, "--instance", "r1", *opts)  # no input: continue the queued work
    assert continued[-1]["outputs"] == ["CBA"]

    resumed = run_json(cli, "run", TEXT, "--checkpoint", after_upper, *opts)  # instance taken from the id
    assert resumed[-1]["instance_id"] == "r1"
    assert resumed[-1]["outputs"] == ["CBA"]

    nothing = cli.invoke(app, ["run", TEXT, "--instance", "r1", *opts])
    assert nothing.exit_code == 2
    assert "nothing to run" in nothing.stderr

    bad = cli.invoke(app, ["restore", TEXT, "r1@" + "f" * 20, *opts])
    assert bad.exit_code == 2
    assert "no checkpoint" in bad.stderr


def test_answer_on_restore_with_checkpoint_and_respond(cli: CliRunner, opts: list[str]) -> None:
    records = run_json(cli, "run", APPROVAL, "--input", '"docs"', "--instance", "c1", *opts)
    [request_id] = records[-1]["pending_requests"]
    waiting = records[-1]["checkpoint_id"]
    done = run_json(cli, "run", APPROVAL, "--checkpoint", waiting, "--respond", f"{request_id}=true", *opts)
    assert done[-1]["status"] == "idle"
    assert done[-1]["outputs"][0]["published"] is True


def test_reset_clears_pending_requests(cli: CliRunner, opts: list[str]) -> None:
    records = run_json(cli, "run", APPROVAL, "--input", '"docs"', "--instance", "z1", *opts)
    [request_id] = records[-1]["pending_requests"]
    reset = cli.invoke(app, ["reset", APPROVAL, "z1", *opts])
    assert reset.exit_code == 0, reset.output
    assert "reset instance z1: new empty checkpoint z1@" in reset.stdout
    [status] = json_lines(cli.invoke(app, ["status", "z1", *opts, "--json"]).stdout)
    assert status["state"] == "idle"
    assert status["pending_requests"] == []
    assert status["latest_checkpoint"]["metadata"] == {"reset": True}
    late = cli.invoke(app, ["run", APPROVAL, "--instance", "z1", *opts, "--respond", f"{request_id}=true"])
    assert late.exit_code == 2
    assert "pending: none" in late.stderr


def test_reset_refuses_an_unknown_instance_unless_told_to_create(cli: CliRunner, opts: list[str]) -> None:
    refused = cli.invoke(app, ["reset", APPROVAL, "typo-1", *opts])
    assert refused.exit_code == 2
    assert "no instance 'typo-1'" in refused.stderr
    assert "--create" in refused.stderr
    [status] = json_lines(cli.invoke(app, ["status", "typo-1", *opts, "--json"]).stdout)
    assert status["latest_checkpoint"] is None  # nothing was written

    created = cli.invoke(app, ["reset", APPROVAL, "typo-1", *opts, "--create"])
    assert created.exit_code == 0, created.output
    [status] = json_lines(cli.invoke(app, ["status", "typo-1", *opts, "--json"]).stdout)
    assert status["latest_checkpoint"]["metadata"] == {"reset": True}


def test_checkpoint_ttl_and_delete_leave_no_instance_forever(
    cli: CliRunner, opts: list[str], redis_url: str, real_redis_prefix: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)

    def keys_of(instance: str) -> list[bytes]:
        return list(client.scan_iter(match=f"{real_redis_prefix}:{{{instance}}}:*"))

    records = run_json(cli, "run", TEXT, "--input", '"hi"', *opts)  # a new instance the command names
    generated = records[0]["data"]["instance_id"] if records[0]["type"] == "started" else None
    generated = generated or next(r["instance_id"] for r in records if r.get("instance_id"))
    assert keys_of(generated)
    assert all(0 < client.pttl(k) <= 7 * 86400 * 1000 for k in keys_of(generated))  # a week by default

    run_json(cli, "run", TEXT, "--input", '"hi"', "--instance", "ttl1", "--checkpoint-ttl", "60", *opts)
    assert all(0 < client.pttl(k) <= 300_000 for k in keys_of("ttl1"))  # epoch: 10 leases of 30 s
    assert max(client.pttl(k) for k in keys_of("ttl1") if not k.endswith(b":epoch")) <= 60_000

    deleted = cli.invoke(app, ["delete", "ttl1", *opts])
    assert deleted.exit_code == 0, deleted.output
    assert "deleted instance ttl1:" in deleted.stdout
    assert keys_of("ttl1") == []

    held = asyncio.run(hold(redis_url, real_redis_prefix, "busy1"))
    refused = cli.invoke(app, ["delete", "busy1", *opts])
    assert refused.exit_code == 4 and "reserved by run 'holder'" in refused.stderr
    assert sorted(keys_of("busy1")) == sorted(held)
    client.close()


async def hold(redis_url: str, prefix: str, instance: str) -> list[bytes]:
    from barrierflow.broker import RedisStore
    from barrierflow.engine.store import new_token, owner_info

    async with RedisStore.from_url(redis_url, prefix=prefix) as store:
        await store.reserve(instance, new_token(), owner_info("holder"))
        return [k async for k in store.client.scan_iter(match=store.keys.pattern(instance))]


def test_the_console_script_is_installed() -> None:
    argv = barrierflow_argv()
    assert argv[0].endswith("barrierflow"), "pip install -e '.[test]' installs the barrierflow script"
