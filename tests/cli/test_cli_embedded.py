"""``barrierflow`` through typer's runner, embedded (no Redis): runs, output shapes, graph, bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from barrierflow.cli.main import app
from barrierflow.cli.render import jsonable
from tests.cli.conftest import json_lines

DOC = json.dumps({"title": "Notes", "text": "Redis stores checkpoints. Workers run supersteps."})

EXAMPLES = [
    ("examples.text_pipeline:text_pipeline", '"hello"', ["OLLEH"], "idle"),
    (
        "examples.document_pipeline:document_pipeline",
        DOC,
        [
            {
                "title": "Notes",
                "words": 6,
                "sentences": 2,
                "keywords": ["checkpoints", "redis", "run", "stores", "supersteps"],
                "summary": "Redis stores checkpoints.",
                "analysers": ["word_count", "keywords", "summary"],
            }
        ],
        "idle",
    ),
    (
        "examples.iterative_loop:guess_the_number",
        "37",
        [{"secret": 37, "attempts": 3, "guesses": [50, 25, 37]}],
        "idle",
    ),
    ("examples.approval_flow:approval_flow", '"docs"', [], "idle_with_pending_requests"),
]


@pytest.mark.parametrize(("target", "payload", "outputs", "status"), EXAMPLES)
def test_every_example_runs_embedded_with_json_lines(
    cli: CliRunner, target: str, payload: str, outputs: list, status: str
) -> None:
    result = cli.invoke(app, ["run", target, "--input", payload])  # stdout is not a TTY: JSON lines
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert records[0]["type"] == "started"
    assert records[-1]["type"] == "result"
    assert records[-1]["status"] == status
    assert records[-1]["outputs"] == outputs
    assert [r["data"] for r in records if r["type"] == "output"] == outputs
    completed = [r["superstep"] for r in records if r["type"] == "superstep_completed"]
    assert completed == list(range(1, len(completed) + 1))
    assert result.stderr == ""


def test_json_event_lines_carry_the_event_fields(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", "examples.text_pipeline:text_pipeline", "--input", '"abc"', "--json"])
    assert result.exit_code == 0
    records = json_lines(result.stdout)
    assert [r["type"] for r in records] == [
        "started",
        "status",
        "checkpoint_created",
        "superstep_started",
        "executor_invoked",
        "executor_completed",
        "checkpoint_created",
        "superstep_completed",
        "superstep_started",
        "executor_invoked",
        "executor_completed",
        "output",
        "checkpoint_created",
        "superstep_completed",
        "status",
        "result",
    ]
    output = next(r for r in records if r["type"] == "output")
    assert output == {"type": "output", "data": "CBA", "executor_id": "reverse", "superstep": 2}
    assert records[1]["data"] == "in_progress"
    result_line = records[-1]
    assert result_line["checkpoint_id"].startswith(result_line["instance_id"] + "@")
    assert set(result_line) == {
        "type",
        "status",
        "instance_id",
        "run_id",
        "checkpoint_id",
        "outputs",
        "pending_requests",
    }


def test_pending_request_in_an_embedded_run_explains_why_it_cannot_be_answered_later(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", "examples.approval_flow:approval_flow", "--input", '"docs"'])
    assert result.exit_code == 0
    [pending] = [r for r in json_lines(result.stdout) if r["type"] == "pending_request"]
    assert pending["response_type"] == "bool"
    assert pending["executor_id"] == "reviewer"
    assert pending["data"]["draft"] == {"topic": "docs", "text": "Docs: a first draft.", "revision": 1}
    assert pending["command"] is None
    assert "--redis" in pending["hint"]


def test_ask_answers_pending_requests_on_the_terminal_and_continues(cli: CliRunner) -> None:
    result = cli.invoke(
        app,
        ["run", "examples.approval_flow:approval_flow", "--input", '"docs"', "--ask"],
        input="false\ntrue\n",
    )
    assert result.exit_code == 0, result.output
    echoed = {"false", "true"}  # the runner echoes what the "user" typed onto stdout
    lines = "\n".join(line for line in result.stdout.splitlines() if line.strip() not in echoed)
    results = [r for r in json_lines(lines) if r["type"] == "result"]
    assert [r["status"] for r in results] == ["idle_with_pending_requests"] * 2 + ["idle"]
    assert results[-1]["outputs"] == [
        {
            "topic": "docs",
            "published": True,
            "revision": 2,
            "text": "Docs: revision 2, tightened after review.",
        }
    ]
    assert "answer to request" in result.stderr


def test_input_from_stdin(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["run", "examples.text_pipeline:text_pipeline", "--input", "-"], input='"stdin"\n'
    )
    assert result.exit_code == 0
    assert json_lines(result.stdout)[-1]["outputs"] == ["NIDTS"]


def test_module_alone_is_enough_when_it_defines_one_workflow(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", "examples.text_pipeline", "--input", '"ab"'])
    assert result.exit_code == 0
    assert json_lines(result.stdout)[-1]["outputs"] == ["BA"]


def test_a_builder_object_works_as_target(cli: CliRunner, tmp_path, monkeypatch) -> None:
    (tmp_path / "my_flow.py").write_text(
        "from barrierflow import WorkflowBuilder, executor\n"
        "@executor(id='echo')\n"
        "async def echo(message: dict, ctx) -> None:\n"
        "    await ctx.yield_output(sorted(message))\n"
        "flow = WorkflowBuilder(name='my_flow', start_executor=echo)\n"
    )
    monkeypatch.chdir(tmp_path)  # the current directory is importable, as with python -m
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli.invoke(app, ["run", "my_flow:flow", "--input", '{"b": 1, "a": 2}'])
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[-1]["outputs"] == [["a", "b"]]


def test_pretty_output_shows_outputs_and_the_final_status(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["run", "examples.text_pipeline:text_pipeline", "--input", '"hello"', "--pretty"]
    )
    assert result.exit_code == 0, result.output
    assert "output from reverse (superstep 2):" in result.stdout
    assert "OLLEH" in result.stdout
    assert "idle · 1 output(s) · 2 superstep(s)" in result.stdout
    assert "embedded, in memory" in result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_pretty_output_of_a_waiting_run_names_the_request(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["run", "examples.approval_flow:approval_flow", "--input", '"docs"', "--pretty", "--no-ask"]
    )
    assert result.exit_code == 0, result.output
    assert "waiting for 1 answer(s)" in result.stdout
    assert "expects bool" in result.stdout
    assert "run with --redis URL" in " ".join(result.stdout.split())


def test_graph_prints_mermaid_and_json(cli: CliRunner) -> None:
    mermaid = cli.invoke(app, ["graph", "examples.document_pipeline:document_pipeline"])
    assert mermaid.exit_code == 0
    lines = mermaid.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert sum("-- fan-out -->" in line for line in lines) == 3
    assert sum("-- fan-in -->" in line for line in lines) == 3
    as_json = cli.invoke(app, ["graph", "examples.iterative_loop:guess_the_number", "--format", "json"])
    assert as_json.exit_code == 0
    graph = json.loads(as_json.stdout)
    assert graph["start"] == "judge"
    assert graph["edges"][0] == {"kind": "switch", "sources": ["judge"], "targets": ["announce", "guesser"]}
    bad = cli.invoke(app, ["graph", "examples.text_pipeline:text_pipeline", "--format", "dot"])
    assert bad.exit_code == 2
    assert "--format must be mermaid or json" in bad.stderr


BAD_INPUT = [
    (["run", "nosuchmodule:flow", "--input", "1"], 2, "no module named 'nosuchmodule'"),
    (
        ["run", "examples.text_pipeline:nope", "--input", "1"],
        2,
        "has no 'nope'; its workflows: examples.text_pipeline:text_pipeline",
    ),
    (["run", "examples.text_pipeline:STOPWORDS", "--input", "1"], 2, "has no 'STOPWORDS'"),
    (
        ["run", "examples.document_pipeline:STOPWORDS", "--input", "1"],
        2,
        "expected a WorkflowBuilder or a factory",
    ),
    (["run", "examples.text_pipeline:Upper", "--input", "1"], 2, "returned Upper, not a WorkflowBuilder"),
    (["run", "examples.text_pipeline:", "--input", "1"], 2, "expected MODULE:FACTORY"),
    (
        ["run", "examples", "--input", "1"],
        2,
        "say which workflow of 'examples' to run, as MODULE:FACTORY; its workflows: "
        "examples.approval_flow:approval_flow, examples.document_pipeline:document_pipeline, "
        "examples.iterative_loop:guess_the_number, examples.resilient_pipeline:resilient_pipeline, "
        "examples.text_pipeline:text_pipeline",
    ),
    (["run", "json", "--input", "1"], 2, "'json' defines no workflow"),
    (["run", "json:nope", "--input", "1"], 2, "'json' defines no workflow"),
    (["run", "examples.text_pipeline:text_pipeline", "--input", "hello"], 2, "--input is not valid JSON"),
    (["run", "examples.text_pipeline:text_pipeline", "--input", "{"], 2, "--input is not valid JSON"),
    (
        ["run", "examples.text_pipeline:text_pipeline", "--input", "5"],
        2,
        "start executor 'upper' has no handler for int; it accepts str",
    ),
    (["run", "examples.text_pipeline:text_pipeline"], 2, "an embedded run keeps its state in memory"),
    (
        ["run", "examples.approval_flow:approval_flow", "--instance", "x", "--respond", "abc=true"],
        2,
        "--respond continues an instance from its stored state",
    ),
    (
        ["run", "examples.approval_flow:approval_flow", "--checkpoint", "x@00000000000000000000"],
        2,
        "--checkpoint continues an instance",
    ),
    (
        ["run", "examples.text_pipeline:text_pipeline", "--input", '"a"', "--checkpoint", "x@0"],
        2,
        "--input starts a new run and --checkpoint resumes one",
    ),
    (
        [
            "run",
            "examples.approval_flow:approval_flow",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--respond",
            "noequals",
        ],
        2,
        "--respond takes ID=JSON",
    ),
    (
        [
            "run",
            "examples.approval_flow:approval_flow",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--respond",
            "a=yes",
        ],
        2,
        "the answer to request 'a' is not valid JSON",
    ),
    (
        ["run", "examples.iterative_loop:guess_the_number", "--input", "500"],
        1,
        "workflow failed: executor 'judge' failed",
    ),
    (
        ["run", "examples.text_pipeline:text_pipeline", "--input", '"a"', "--redis", "redis://127.0.0.1:1/0"],
        3,
        "cannot reach Redis at redis://127.0.0.1:1/0",
    ),
    (["status", "x", "--redis", "redis://127.0.0.1:1/0"], 3, "cannot reach Redis"),
    (["checkpoints", "list", "x", "--redis", "redis://127.0.0.1:1/0"], 3, "cannot reach Redis"),
    (["status", "x", "--redis", "http://nope"], 2, "invalid Redis URL"),
    (["graph", "examples.text_pipeline:nope"], 2, "has no 'nope'"),
]


@pytest.mark.parametrize(
    ("argv", "code", "message"), BAD_INPUT, ids=[" ".join(a[:3]) + f"->{c}" for a, c, _ in BAD_INPUT]
)
def test_bad_input_gets_a_clear_message_and_exit_code(
    cli: CliRunner, argv: list[str], code: int, message: str
) -> None:
    result = cli.invoke(app, argv)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_unreachable_redis_says_where_its_url_came_from(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sentence, no ".." and no advice to pass --redis to a user who did."""
    from barrierflow.cli import backends

    url = "redis://127.0.0.1:1/0"
    monkeypatch.delenv("BARRIERFLOW_REDIS_URL", raising=False)
    given = cli.invoke(app, ["status", "x", "--redis", url])
    env = cli.invoke(app, ["status", "x"], env={"BARRIERFLOW_REDIS_URL": url})
    monkeypatch.setattr(backends, "DEFAULT_REDIS_URL", url)
    default = cli.invoke(app, ["checkpoints", "list", "x"])
    for result in (given, env, default):
        assert result.exit_code == 3, result.output
        assert f"cannot reach Redis at {url}: ConnectionError: " in result.stderr
        assert ".." not in result.stderr and ".;" not in result.stderr
    assert "pass --redis" not in given.stderr
    assert "check the URL given with --redis" in given.stderr
    assert "check BARRIERFLOW_REDIS_URL (or pass --redis URL)" in env.stderr
    assert "this is the local default: start Redis" in default.stderr
    assert "or pass --redis URL" in default.stderr


def test_json_mode_reports_errors_as_a_json_line_too(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", "examples.text_pipeline:nope", "--input", "1", "--json"])
    assert result.exit_code == 2
    [error] = json_lines(result.stdout)
    assert error["type"] == "error"
    assert error["exit_code"] == 2
    assert "has no 'nope'" in error["message"]


def test_debug_shows_the_traceback(cli: CliRunner) -> None:
    quiet = cli.invoke(app, ["run", "examples.iterative_loop:guess_the_number", "--input", "500"])
    assert "Traceback" not in quiet.stderr
    loud = cli.invoke(app, ["run", "examples.iterative_loop:guess_the_number", "--input", "500", "--debug"])
    assert loud.exit_code == 1
    assert "Traceback" in loud.stderr
    assert "ValueError: the secret 500 must lie in [1, 100]" in loud.stderr
    global_flag = cli.invoke(
        app, ["--debug", "run", "examples.iterative_loop:guess_the_number", "--input", "500"]
    )
    assert "Traceback" in global_flag.stderr


def test_a_module_that_fails_to_import_is_reported_as_such(cli: CliRunner, tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_flow.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli.invoke(app, ["run", "broken_flow:flow", "--input", "1"])
    assert result.exit_code == 2
    assert "importing module 'broken_flow' failed" in result.stderr
    assert "not_installed_anywhere" in result.stderr


def test_an_invalid_workflow_names_the_problem(cli: CliRunner, tmp_path, monkeypatch) -> None:
    (tmp_path / "invalid_flow.py").write_text(
        "from barrierflow import WorkflowBuilder, executor\n"
        "@executor(id='a')\n"
        "def a(m: str, ctx) -> None: ...\n"
        "@executor(id='b')\n"
        "def b(m: str, ctx) -> None: ...\n"
        "def flow():\n"
        "    return WorkflowBuilder(name='invalid', start_executor=a).add_executor(b)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli.invoke(app, ["graph", "invalid_flow:flow"])
    assert result.exit_code == 2
    assert "invalid workflow" in result.stderr
    assert "'b'" in result.stderr


def test_help_documents_the_embedded_limit_and_exit_codes(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # rich draws boxes around the options
    assert "Without it the run is embedded" in text
    assert "the start executor needs a handler for that type" in text
    assert "Exit codes:" in text


def test_jsonable_never_fails() -> None:
    import datetime
    import decimal
    import enum
    import uuid

    class Colour(enum.Enum):
        RED = "red"

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    value = {
        1: Colour.RED,
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "n": decimal.Decimal("1.5"),
        "id": uuid.UUID(int=0),
        "set": {3, 1},
        "tuple": (1, "a"),
        "bytes": b"ab",
        "nan": float("nan"),
        "type": int,
        "error": ValueError("bad"),
        "other": Opaque(),
    }
    assert jsonable(value) == {
        "1": "red",
        "when": "2024-01-02T03:04:05",
        "n": "1.5",
        "id": "00000000-0000-0000-0000-000000000000",
        "set": [1, 3],
        "tuple": [1, "a"],
        "bytes": "ab",
        "nan": "nan",
        "type": "int",
        "error": "ValueError: bad",
        "other": "<opaque>",
    }
    json.dumps(jsonable(value))
