"""``barrierflow``: run workflows embedded or on Redis + Celery, and inspect or steer their instances.

Commands: ``run``, ``checkpoints list|show|delete``, ``restore``, ``reset``, ``status``, ``graph``, ``worker``.
Each one runs inside ``errors.reported()``: a clear message and an exit code instead of a traceback (unless
``--debug``). The commands are thin: loading targets is ``loading``, stores and Celery are ``backends``, and
displaying a run is ``render``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import uuid
from typing import Annotated, Any

import typer

from barrierflow.engine import RunState, Store, Workflow, WorkflowBuilder

from . import backends
from .errors import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_WORKFLOW_FAILED,
    CliError,
    Session,
    reported,
)
from .loading import (
    coerce_answer,
    env_imports,
    example_answer,
    factory_target,
    import_modules,
    load_builder,
    parse_json,
    parse_responses,
    read_input,
)
from .render import JsonRenderer, LiveRenderer, dumps, jsonable, response_type_name

app = typer.Typer(
    name="barrierflow",
    help="barrierflow: superstep (BSP) workflows, in process or on Redis + Celery workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    epilog=EXIT_CODES_HELP,
)
checkpoints_app = typer.Typer(
    help="List, show and delete the checkpoints of an instance (needs Redis).", no_args_is_help=True
)
app.add_typer(checkpoints_app, name="checkpoints")

TARGET_HELP = (
    "The workflow, as MODULE:FACTORY, where FACTORY is a function returning a WorkflowBuilder (usually @register_workflow) or a "
    "WorkflowBuilder object. MODULE alone works when it defines one workflow."
)
EMBEDDED_HINT = (
    "This run was embedded: its state lived in memory and is gone now that the process ends, so these requests "
    "cannot be answered later. To answer them from another command, run with --redis URL (and --instance ID)."
)

Target = Annotated[str, typer.Argument(metavar="MODULE:FACTORY", help=TARGET_HELP, show_default=False)]
RedisUrl = Annotated[
    str,
    typer.Option("--redis", metavar="URL", envvar="BARRIERFLOW_REDIS_URL", help="The Redis store."),
]
Prefix = Annotated[
    str, typer.Option("--prefix", envvar="BARRIERFLOW_PREFIX", help="Key prefix of the instances in Redis.")
]
Imports = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        "-I",
        metavar="MODULE",
        help="Import MODULE first, so the message types of its workflows can be decoded "
        "(repeatable; BARRIERFLOW_IMPORTS adds more, comma-separated).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="JSON output, one object per line.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def _start(debug: bool, json_output: bool = False) -> None:
    Session.debug = Session.debug or debug
    Session.json = json_output


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="BARRIERFLOW_DEBUG", help="Show tracebacks on errors.")
    ] = False,
) -> None:
    Session.debug = debug
    Session.json = False


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False)


def _exit(code: int) -> None:
    if code != EXIT_OK:
        raise typer.Exit(code)


# -- run ------------------------------------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def run(
    target: Target,
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON|-",
            help="A new run's input, as JSON ('-' reads it from stdin). It is decoded to Python "
            "(str, int, float, bool, None, list, dict): the start executor needs a handler for that type. "
            "A string needs JSON quotes: --input '\"hello\"'.",
        ),
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", metavar="ID", help="The instance to run (default: a new one).")
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            metavar="URL",
            help="Keep the instance in Redis (needed to continue it, answer its requests or restore it from "
            "another command). Without it the run is embedded: in process, in memory, gone when it ends. "
            "Not read from BARRIERFLOW_REDIS_URL: a run is embedded unless you ask.",
        ),
    ] = None,
    celery: Annotated[
        bool,
        typer.Option(
            "--celery",
            help="Run the deliveries on Celery workers (start them with `barrierflow worker`). Implies Redis: "
            "--redis, else BARRIERFLOW_REDIS_URL, else redis://localhost:6379/0.",
        ),
    ] = False,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint", metavar="ID", help="Restore this checkpoint, then continue (needs --redis)."
        ),
    ] = None,
    respond: Annotated[
        list[str] | None,
        typer.Option(
            "--respond",
            metavar="ID=JSON",
            help="Answer a pending request (repeatable; needs --redis and --instance). A JSON object answering a "
            "dataclass or pydantic request type is turned into that type.",
        ),
    ] = None,
    json_output: Json = False,
    pretty: Annotated[
        bool, typer.Option("--pretty", help="Live display even when stdout is not a terminal.")
    ] = False,
    ask: Annotated[
        bool | None,
        typer.Option(
            "--ask/--no-ask",
            help="Ask for the answers to pending requests on the terminal and continue (embedded runs; "
            "default: when stdin and stdout are terminals).",
        ),
    ] = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Run a workflow: a new run (--input), answers (--respond), a resume (--checkpoint), or continue queued work.

    Embedded by default (in process, MemoryStore): no server needed, nothing survives the process. With --redis
    the instance lives in Redis and any later command can continue it; with --celery workers run the
    deliveries. Shows live progress on a terminal and JSON lines otherwise (or with --json); pending requests are
    printed with the command that answers them.
    """
    use_json = json_output or (not pretty and not sys.stdout.isatty())
    _start(debug, use_json)
    if ask is None:
        ask = not use_json and sys.stdin.isatty() and sys.stdout.isatty()
    with reported():
        code = asyncio.run(
            _run(
                target=target,
                input_text=input,
                instance=instance,
                redis=redis,
                celery=celery,
                checkpoint=checkpoint,
                respond=respond or [],
                use_json=use_json,
                ask=ask,
                prefix=prefix,
            )
        )
    _exit(code)


async def _run(
    *,
    target: str,
    input_text: str | None,
    instance: str | None,
    redis: str | None,
    celery: bool,
    checkpoint: str | None,
    respond: list[str],
    use_json: bool,
    ask: bool,
    prefix: str,
) -> int:
    builder = load_builder(target)  # an unknown module or factory is the first thing to report
    has_message = input_text is not None
    message = read_input(input_text)
    responses = parse_responses(respond)
    if has_message and checkpoint:
        raise CliError("--input starts a new run and --checkpoint resumes one: pass one of them")
    if has_message and responses:
        raise CliError("--input starts a new run and --respond answers a waiting one: pass one of them")
    distributed = redis is not None or celery
    if not distributed and not has_message:
        what = "--checkpoint" if checkpoint else "--respond" if responses else "a run without --input"
        raise CliError(
            f"{what} continues an instance from its stored state, but an embedded run keeps its state in memory, "
            "which is gone once its process ends. Keep instances in Redis: pass --redis URL to both commands "
            "(or give --input JSON to start a new embedded run)"
        )
    if checkpoint and instance is None:
        instance = Store.instance_of(checkpoint)
        if instance is None:
            raise CliError(
                f"{checkpoint!r} is not a barrierflow checkpoint id (INSTANCE@HEX); pass --instance ID"
            )
    if not has_message and instance is None:
        raise CliError(
            "--respond and continuing a run need --instance ID (the run that is waiting printed it)"
        )
    instance_id = instance or uuid.uuid4().hex
    redis_url = redis or backends.env_redis_url()
    store = await backends.redis_store(redis_url, prefix) if distributed else backends.memory_store()
    dispatcher = None
    renderer: JsonRenderer | LiveRenderer | None = None
    try:
        if celery:
            backends.configure_distributed_env(redis_url, prefix)
            celery_app = backends.celery_app()
            backends.check_broker(celery_app)
            if backends.workers_answering(celery_app) == 0:
                print(
                    "warning: no Celery worker answered a ping; deliveries wait in the queue until one starts "
                    f"(barrierflow worker --import {target.partition(':')[0]})",
                    file=sys.stderr,
                )
            dispatcher = backends.celery_dispatcher(celery_app, store)
        wf = builder.build(instance_id=instance_id, store=store, dispatcher=dispatcher)
        where = "embedded, in memory"
        if distributed:
            where = f"Redis {backends.redact(redis_url)}, prefix {prefix}" + (
                ", Celery workers" if celery else ""
            )
        renderer = JsonRenderer() if use_json else LiveRenderer(_console(), wf.name, instance_id, where)
        kwargs: dict[str, Any] = {}
        if has_message:
            kwargs["message"] = message
        if checkpoint:
            kwargs["checkpoint_id"] = checkpoint
        if responses:
            kwargs["responses"] = await _coerce_responses(wf, responses, checkpoint)

        def command_for(request_id: str, event: Any) -> str | None:
            if not distributed:
                return None
            return answer_command(
                target,
                instance_id,
                redis,
                celery,
                prefix,
                request_id,
                example_answer(response_type_name(event)),
            )

        while True:
            with renderer:
                stream = wf.stream(**kwargs)
                async for event in stream:
                    renderer.event(event)
                result = await stream.result()
            commands = {rid: command_for(rid, event) for rid, event in result.pending_requests.items()}
            pending = result.status is RunState.IDLE_WITH_PENDING_REQUESTS
            hint = EMBEDDED_HINT if pending and not distributed and not ask else None
            renderer.finish(result, instance_id, commands, hint)
            if not (pending and ask):
                break
            kwargs = {"responses": await _coerce_responses(wf, _prompt_answers(result), None)}
        return EXIT_WORKFLOW_FAILED if result.status is RunState.FAILED else EXIT_OK
    finally:
        if dispatcher is not None:
            await dispatcher.aclose()
        await backends.close_store(store)


def answer_command(
    target: str,
    instance_id: str,
    redis: str | None,
    celery: bool,
    prefix: str,
    request_id: str,
    answer: str,
) -> str:
    """The exact ``barrierflow run`` command that answers one request (a password never appears in it)."""
    parts = ["barrierflow", "run", target, "--instance", instance_id]
    tail: list[str] = []
    if redis is not None:
        if backends.has_password(redis):
            tail.append('--redis "$BARRIERFLOW_REDIS_URL"')
        else:
            parts += ["--redis", redis]
    if celery:
        parts.append("--celery")
    if prefix != backends.DEFAULT_PREFIX:
        parts += ["--prefix", prefix]
    parts += ["--respond", f"{request_id}={answer}"]
    return " ".join([shlex.join(parts), *tail])


async def _coerce_responses(
    wf: Workflow, responses: dict[str, Any], checkpoint: str | None
) -> dict[str, Any]:
    """Fit each JSON answer to its request's response type (unknown ids are left for the engine to refuse)."""
    if checkpoint:
        pending = (await wf.store.load_checkpoint(checkpoint)).pending_requests
    else:
        pending = await wf.pending_requests()
    out = {}
    for request_id, value in responses.items():
        request = pending.get(request_id)
        out[request_id] = value if request is None else coerce_answer(value, request.response_type)
    return out


def _prompt_answers(result: Any) -> dict[str, Any]:
    answers = {}
    for request_id, event in result.pending_requests.items():
        kind = response_type_name(event)
        text = typer.prompt(f"answer to request {request_id} ({kind}, as JSON)", err=True)
        answers[request_id] = parse_json(text, f"the answer to request {request_id!r}")
    return answers


# -- instances in Redis ---------------------------------------------------------------------------------------


def _with_imports(imports: list[str] | None) -> None:
    import_modules([*env_imports(), *(imports or [])])


def _checkpoint_summary(cp: Any) -> dict[str, Any]:
    return {
        "checkpoint_id": cp.checkpoint_id,
        "instance_id": cp.instance_id,
        "workflow_name": cp.workflow_name,
        "superstep": cp.superstep,
        "created_at": cp.created_at.isoformat(timespec="seconds"),
        "queued_messages": len(cp.messages),
        "pending_requests": sorted(cp.pending_requests),
        "previous_checkpoint_id": cp.previous_checkpoint_id,
        "run_id": cp.run_id,
        "epoch": cp.epoch,
        "metadata": jsonable(cp.metadata),
    }


@checkpoints_app.command("list", epilog=EXIT_CODES_HELP)
def checkpoints_list(
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    redis: RedisUrl = backends.DEFAULT_REDIS_URL,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    imports: Imports = None,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """The retained checkpoints of INSTANCE, newest first."""
    _start(debug, json_output)
    with reported():
        _with_imports(imports)
        checkpoints = asyncio.run(_in_store(redis, prefix, lambda s: s.list_checkpoints(instance)))
        if json_output:
            for cp in checkpoints:
                print(dumps({"type": "checkpoint", **_checkpoint_summary(cp)}))
            return
        console = _console()
        if not checkpoints:
            console.print(f"no checkpoints of instance {instance!r} under prefix {prefix!r}")
            return
        from rich.table import Table

        table = Table(title=f"checkpoints of {instance} (newest first)")
        for column in ("checkpoint", "superstep", "created", "queued", "pending", "previous", "metadata"):
            table.add_column(column, overflow="fold")  # ids are for copying: never cut them short
        for cp in checkpoints:
            s = _checkpoint_summary(cp)
            table.add_row(
                s["checkpoint_id"],
                str(s["superstep"]),
                s["created_at"],
                str(s["queued_messages"]),
                ", ".join(s["pending_requests"]) or "-",
                s["previous_checkpoint_id"] or "-",
                dumps(s["metadata"]) if s["metadata"] else "",
            )
        console.print(table)


@checkpoints_app.command("show", epilog=EXIT_CODES_HELP)
def checkpoints_show(
    checkpoint_id: Annotated[str, typer.Argument(metavar="CHECKPOINT_ID")],
    redis: RedisUrl = backends.DEFAULT_REDIS_URL,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    imports: Imports = None,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """Everything a checkpoint holds: queued messages, shared and executor state, fan-in buffers, requests."""
    _start(debug, json_output)
    with reported():
        _with_imports(imports)
        cp = asyncio.run(_in_store(redis, prefix, lambda s: s.load_checkpoint(checkpoint_id)))
        record = {"type": "checkpoint", **jsonable(cp)}
        if json_output:
            print(dumps(record))
        else:
            _console().print_json(dumps(record))


@checkpoints_app.command("delete", epilog=EXIT_CODES_HELP)
def checkpoints_delete(
    checkpoint_ids: Annotated[list[str], typer.Argument(metavar="CHECKPOINT_ID...")],
    redis: RedisUrl = backends.DEFAULT_REDIS_URL,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Delete checkpoints (exit 2 if one of them does not exist)."""
    _start(debug)

    async def delete_all(store: Store) -> list[str]:
        return [cid for cid in checkpoint_ids if not await store.delete_checkpoint(cid)]

    with reported():
        missing = asyncio.run(_in_store(redis, prefix, delete_all))
        for cid in checkpoint_ids:
            if cid not in missing:
                print(f"deleted {cid}")
        if missing:
            raise CliError(f"no such checkpoint(s) under prefix {prefix!r}: {', '.join(missing)}")


async def _in_store(redis: str, prefix: str, work: Any) -> Any:
    store = await backends.redis_store(redis, prefix)
    try:
        return await work(store)
    finally:
        await backends.close_store(store)


async def _on_workflow(builder: WorkflowBuilder, instance_id: str, redis: str, prefix: str, work: Any) -> Any:
    store = await backends.redis_store(redis, prefix)
    try:
        return await work(builder.build(instance_id=instance_id, store=store))
    finally:
        await backends.close_store(store)


@app.command(epilog=EXIT_CODES_HELP)
def restore(
    target: Target,
    checkpoint_id: Annotated[str, typer.Argument(metavar="CHECKPOINT_ID")],
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance", metavar="ID", help="Restore into this instance (default: the checkpoint's)."
        ),
    ] = None,
    redis: RedisUrl = backends.DEFAULT_REDIS_URL,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Make a checkpoint the instance's state again, without running (writes a copy whose parent it is)."""
    _start(debug)
    with reported():
        instance_id = instance or Store.instance_of(checkpoint_id)
        if instance_id is None:
            raise CliError(
                f"{checkpoint_id!r} is not a barrierflow checkpoint id (INSTANCE@HEX); pass --instance"
            )
        builder = load_builder(target)
        new_id = asyncio.run(
            _on_workflow(builder, instance_id, redis, prefix, lambda wf: wf.restore(checkpoint_id))
        )
        print(f"restored {checkpoint_id} into instance {instance_id} as checkpoint {new_id}")
        print(
            f"continue it with: {shlex.join(['barrierflow', 'run', target, '--instance', instance_id, '--redis', redis])}"
        )


@app.command(epilog=EXIT_CODES_HELP)
def reset(
    target: Target,
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    redis: RedisUrl = backends.DEFAULT_REDIS_URL,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Clean slate for INSTANCE: drop queued work, state and pending requests (its old checkpoints remain)."""
    _start(debug)
    with reported():
        builder = load_builder(target)
        new_id = asyncio.run(
            _on_workflow(builder, instance, redis, prefix, lambda wf: wf.reset_for_new_run())
        )
        print(f"reset instance {instance}: new empty checkpoint {new_id}")


@app.command(epilog=EXIT_CODES_HELP)
def status(
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    redis: RedisUrl = backends.DEFAULT_REDIS_URL,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    imports: Imports = None,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """Who holds INSTANCE (lock owner, TTL, epoch), its latest checkpoint and its pending requests."""
    _start(debug, json_output)
    with reported():
        _with_imports(imports)
        info = asyncio.run(_in_store(redis, prefix, lambda s: _status(s, instance)))
        commands = {}
        if info["latest"] is not None:
            target = factory_target(info["latest"].workflow_name) or "MODULE:FACTORY"
            for request_id, request in info["latest"].pending_requests.items():
                commands[request_id] = answer_command(
                    target,
                    instance,
                    redis,
                    False,
                    prefix,
                    request_id,
                    example_answer(getattr(request.response_type, "__name__", None)),
                )
        record = _status_record(instance, info, commands)
        if json_output:
            print(dumps(record))
        else:
            _print_status(record)


async def _status(store: Store, instance: str) -> dict[str, Any]:
    reservation = await store.describe(instance)
    return {"reservation": reservation, "latest": await store.latest_checkpoint(instance)}


def _status_record(instance: str, info: dict[str, Any], commands: dict[str, str]) -> dict[str, Any]:
    reservation, cp = info["reservation"], info["latest"]
    record: dict[str, Any] = {
        "type": "status",
        "instance_id": instance,
        "lock": {
            "held": reservation.held,
            "owner": jsonable(reservation.owner) if reservation.held else None,
            "ttl_left": reservation.ttl_left,
        },
        "epoch": reservation.epoch,
        "latest_checkpoint": None,
        "state": "unknown instance" if cp is None else "idle",
        "pending_requests": [],
    }
    if cp is None:
        return record
    record["latest_checkpoint"] = _checkpoint_summary(cp)
    if reservation.held:
        record["state"] = "running"
    elif cp.messages:
        record["state"] = f"unfinished: {len(cp.messages)} message(s) queued (continue with run --instance)"
    elif cp.pending_requests:
        record["state"] = RunState.IDLE_WITH_PENDING_REQUESTS.value
    record["pending_requests"] = [
        {
            "request_id": rid,
            "executor_id": request.source_executor_id,
            "data": jsonable(request.data),
            "response_type": getattr(request.response_type, "__name__", str(request.response_type)),
            "command": commands.get(rid),
        }
        for rid, request in cp.pending_requests.items()
    ]
    return record


def _print_status(record: dict[str, Any]) -> None:
    from rich.markup import escape

    console = _console()
    lock = record["lock"]
    if lock["held"]:
        owner = lock["owner"] or {}
        ttl = "?" if lock["ttl_left"] is None else f"{lock['ttl_left']:.1f} s"
        held = f"held by run {owner.get('run_id')} (host {owner.get('host')}, pid {owner.get('pid')}), TTL left {ttl}"
    else:
        held = "free"
    console.print(f"[bold]instance[/] {escape(record['instance_id'])}")
    console.print(f"  lock      {escape(held)}")
    console.print(f"  epoch     {record['epoch']}")
    console.print(f"  state     {escape(record['state'])}")
    cp = record["latest_checkpoint"]
    if cp is None:
        console.print("  latest    no checkpoint (no run has stored this instance under this prefix)")
        return
    console.print(
        f"  latest    {escape(cp['checkpoint_id'])} (workflow {escape(cp['workflow_name'])}, superstep "
        f"{cp['superstep']}, {cp['created_at']})"
    )
    for request in record["pending_requests"]:
        console.print(
            f"  pending   {escape(request['request_id'])} from {escape(str(request['executor_id']))} expects "
            f"{escape(request['response_type'])}: {escape(dumps(request['data']))}"
        )
        if request["command"]:
            console.print(
                f"            answer with: {escape(request['command'])}", soft_wrap=True, highlight=False
            )


# -- graph and worker -----------------------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def graph(
    target: Target,
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid or json.")] = "mermaid",
    debug: Debug = False,
) -> None:
    """Print the workflow graph (a Mermaid flowchart by default)."""
    _start(debug)
    with reported():
        if format not in ("mermaid", "json"):
            raise CliError(f"--format must be mermaid or json, not {format!r}")
        builder = load_builder(target)
        wf = builder.build()
        if format == "mermaid":
            print(wf.to_mermaid())
            return
        g = wf.graph
        print(
            dumps(
                {
                    "type": "graph",
                    "name": g.name,
                    "start": g.start_id,
                    "signature": g.signature,
                    "executors": list(g.executors),
                    "edges": [
                        {"kind": grp.kind, "sources": list(grp.sources), "targets": list(grp.targets)}
                        for grp in g.groups
                    ],
                }
            )
        )


@app.command(
    epilog="Arguments after the options (or after --) go to `celery worker` as they are, e.g. "
    "`barrierflow worker -I examples.document_pipeline -- --without-gossip`. " + EXIT_CODES_HELP,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def worker(
    ctx: typer.Context,
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            "-I",
            metavar="MODULE",
            help="A module defining workflows (repeatable; added to BARRIERFLOW_IMPORTS).",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Worker processes (default: CPU count).")
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis", metavar="URL", help="The Redis store (default: BARRIERFLOW_REDIS_URL or local)."
        ),
    ] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Key prefix (default: BARRIERFLOW_PREFIX or barrierflow).")
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Celery log level.")] = "INFO",
    pool: Annotated[
        str | None, typer.Option("--pool", "-P", help="Celery pool (prefork, threads, solo).")
    ] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", "-n", help="Celery node name.")] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", "-Q", help="Queue to consume (default: BARRIERFLOW_QUEUE or barrierflow)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Start a Celery worker for barrierflow (the same as `celery -A barrierflow.workers.app worker`)."""
    _start(debug)
    with reported():
        modules = import_modules([*env_imports(), *(imports or [])])
        if not modules:
            print(
                "warning: no workflow modules to import (--import MODULE or BARRIERFLOW_IMPORTS): this worker "
                "will refuse every task",
                file=sys.stderr,
            )
        os.environ["BARRIERFLOW_IMPORTS"] = ",".join(modules)
        if redis is not None:
            os.environ["BARRIERFLOW_REDIS_URL"] = redis
        if prefix is not None:
            os.environ["BARRIERFLOW_PREFIX"] = prefix
        if queue is not None:
            os.environ["BARRIERFLOW_QUEUE"] = queue
        celery_app = backends.celery_app()
        backends.check_broker(celery_app)
        argv = ["worker", f"--loglevel={loglevel}"]
        if concurrency is not None:
            argv.append(f"--concurrency={concurrency}")
        if pool is not None:
            argv.append(f"--pool={pool}")
        if hostname is not None:
            argv.append(f"--hostname={hostname}")
        argv += [f"--queues={celery_app.conf.task_default_queue}", *ctx.args]
        start_worker(celery_app, argv)


def start_worker(celery_app: Any, argv: list[str]) -> None:
    """Hand over to Celery (it blocks until the worker stops)."""
    celery_app.worker_main(argv)


def main() -> None:
    app(prog_name="barrierflow")


if __name__ == "__main__":
    main()
