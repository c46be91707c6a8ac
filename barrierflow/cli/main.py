"""``barrierflow``: run workflows embedded or on Redis + Celery, and inspect or steer their instances.

Commands: ``run``, ``checkpoints list|show|delete``, ``restore``, ``reset``, ``delete``, ``status``, ``graph``,
``worker``, ``workers``, and the run queue's ``coordinator``, ``submit``, ``runs show|wait|cancel|list``,
``watch`` (``queue_commands``).
Each one runs inside ``errors.reported()``: a clear message and an exit code instead of a traceback (unless
``--debug``). The commands are thin: loading targets is ``loading``, stores and Celery are ``backends``, and
displaying a run is ``render``.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import uuid
from typing import Annotated, Any

import typer

from barrierflow.engine import RunState, Store, Workflow, WorkflowBuilder

from . import backends, queue_commands, serve_command
from .backends import RedisTarget
from .errors import (
    EXIT_CODES_HELP,
    EXIT_NOT_LIVE,
    EXIT_OK,
    EXIT_WORKFLOW_FAILED,
    CliError,
    Session,
    reported,
)
from .instances import StoredCheckpoint, latest_stored, list_stored, summary_record
from .live_workers import WorkersReport, preflight
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
from .options import (
    Broker,
    Debug,
    Imports,
    Json,
    Prefix,
    RedisUrl,
    exit_with,
    new_console,
    start,
    with_imports,
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
queue_commands.register(app)
app.command(epilog=EXIT_CODES_HELP)(serve_command.serve)

#: Always given to `celery worker` by `barrierflow worker` (why: the command's docstring).
WORKER_FLAGS = ("--without-mingle", "--without-gossip")
TARGET_HELP = (
    "The workflow, as MODULE:FACTORY, where FACTORY is a function returning a WorkflowBuilder (usually @register_workflow) or a "
    "WorkflowBuilder object. MODULE alone works when it defines one workflow."
)
#: Checkpoint TTL of an instance ``run --redis`` names itself (a uuid nobody else knows): a week, not forever.
NEW_INSTANCE_TTL = 7 * 86400.0
EMBEDDED_HINT = (
    "This run was embedded: its state lived in memory and is gone now that the process ends, so these requests "
    "cannot be answered later. To answer them from another command, run with --redis URL (and --instance ID)."
)

Target = Annotated[str, typer.Argument(metavar="MODULE:FACTORY", help=TARGET_HELP, show_default=False)]


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="BARRIERFLOW_DEBUG", help="Show tracebacks on errors.")
    ] = False,
) -> None:
    Session.debug = debug
    Session.json = False


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
    broker: Broker = None,
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
    checkpoint_ttl: Annotated[
        float | None,
        typer.Option(
            "--checkpoint-ttl",
            metavar="SECONDS",
            min=0.001,
            help="Let the instance's keys in Redis expire SECONDS after its latest checkpoint. Default: never "
            "for --instance ID; a week for a new instance this command names itself "
            "(`barrierflow delete INSTANCE` removes one at once).",
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
    start(debug, use_json)
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
                broker=broker,
                checkpoint=checkpoint,
                respond=respond or [],
                use_json=use_json,
                ask=ask,
                prefix=prefix,
                checkpoint_ttl=checkpoint_ttl,
            )
        )
    exit_with(code)


async def _run(
    *,
    target: str,
    input_text: str | None,
    instance: str | None,
    redis: str | None,
    celery: bool,
    broker: str | None,
    checkpoint: str | None,
    respond: list[str],
    use_json: bool,
    ask: bool,
    prefix: str,
    checkpoint_ttl: float | None = None,
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
    if instance is None and checkpoint_ttl is None:
        checkpoint_ttl = NEW_INSTANCE_TTL
    location = RedisTarget.resolve(redis)
    store = (
        await backends.redis_store(location, prefix, checkpoint_ttl)
        if distributed
        else backends.memory_store()
    )
    dispatcher = None
    renderer: JsonRenderer | LiveRenderer | None = None
    try:
        if celery:
            celery_app = backends.celery_app(redis_url=location.url, prefix=prefix, broker_url=broker)
            backends.check_broker(celery_app)
            conf = celery_app.conf
            warning = await preflight(
                store.client,
                conf.barrierflow_prefix,
                conf.task_default_queue,
                location.url,
                f"barrierflow worker --import {target.partition(':')[0]}",
            )
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
            dispatcher = backends.celery_dispatcher(celery_app, store)
        wf = builder.build(instance_id=instance_id, store=store, dispatcher=dispatcher)
        where = "embedded, in memory"
        if distributed:
            where = f"Redis {backends.redact(location.url)}, prefix {prefix}" + (
                ", Celery workers" if celery else ""
            )
        renderer = JsonRenderer() if use_json else LiveRenderer(new_console(), wf.name, instance_id, where)
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
    request_id: str | None,
    answer: str | None,
) -> str:
    """The exact ``barrierflow run`` command that continues the instance, answering one request when given.

    A password never appears in it.
    """
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
    if request_id is not None:
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


@checkpoints_app.command("list", epilog=EXIT_CODES_HELP)
def checkpoints_list(
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    imports: Imports = None,
    json_output: Json = False,
    pretty: Annotated[
        bool, typer.Option("--pretty", help="A table even when stdout is not a terminal.")
    ] = False,
    debug: Debug = False,
) -> None:
    """The retained checkpoints of INSTANCE, newest first.

    A table on a terminal (ids whole, never wrapped); JSON lines otherwise (or with --json), one per checkpoint.
    Without the workflow's modules (-I) the messages and state are not decoded, but every id, superstep and
    count is still shown.
    """
    use_json = json_output or (not pretty and not sys.stdout.isatty())
    start(debug, use_json)
    with reported():
        with_imports(imports)
        stored = asyncio.run(
            _in_store(RedisTarget.resolve(redis), prefix, lambda s: list_stored(s, instance))
        )
        rows = [summary_record(cp) for cp in stored]
        if use_json:
            for row in rows:
                print(dumps({"type": "checkpoint", **row}))
            return
        console = new_console()
        if not rows:
            console.print(f"no checkpoints of instance {instance!r} under prefix {prefix!r}", highlight=False)
            return
        console.print(f"checkpoints of {instance} (newest first)", highlight=False, soft_wrap=True)
        _print_checkpoints(console, rows)
        undecoded = next((row["undecoded"] for row in rows if "undecoded" in row), None)
        if undecoded:
            console.print(f"not decoded: {undecoded}", highlight=False, soft_wrap=True)


def _print_checkpoints(console: Any, rows: list[dict[str, Any]]) -> None:
    """Ids are for copying into ``show`` and ``restore``, so they are never wrapped or cut.

    A table when it fits the terminal; otherwise each id on a line of its own, its details on the next.
    """
    from rich.table import Table

    previous = []
    for row, below in zip(rows, [*rows[1:], None], strict=True):
        parent = row["previous_checkpoint_id"]
        previous.append("↓" if below is not None and parent == below["checkpoint_id"] else parent or "-")
    created = [row["created_at"].replace("T", " ").removesuffix("+00:00") for row in rows]
    widths = [max(len(row["checkpoint_id"]) for row in rows), 4, 19, 6, 7, max(8, *map(len, previous))]
    if console.width >= sum(widths) + 3 * len(widths) + 1:  # each cell is padded by 1 and ruled by 1
        table = Table(caption="previous: ↓ = the next row", caption_justify="left")
        table.add_column("checkpoint", no_wrap=True)
        table.add_column("step", justify="right")
        table.add_column("created", no_wrap=True)
        table.add_column("queued", justify="right")
        table.add_column("pending", justify="right")
        table.add_column("previous", no_wrap=True)
        for row, when, parent in zip(rows, created, previous, strict=True):
            table.add_row(
                row["checkpoint_id"],
                str(row["superstep"]),
                when,
                str(row["queued_messages"]),
                str(len(row["pending_requests"])),
                parent,
            )
        console.print(table)
        return
    for row, when, parent in zip(rows, created, previous, strict=True):
        console.print(row["checkpoint_id"], soft_wrap=True, highlight=False)
        after = "" if parent in ("↓", "-") else f", after {parent}"
        console.print(
            f"    superstep {row['superstep']}, {when}, {row['queued_messages']} queued, "
            f"{len(row['pending_requests'])} pending{after}",
            soft_wrap=True,
            highlight=False,
        )


@checkpoints_app.command("show", epilog=EXIT_CODES_HELP)
def checkpoints_show(
    checkpoint_id: Annotated[str, typer.Argument(metavar="CHECKPOINT_ID")],
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    imports: Imports = None,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """Everything a checkpoint holds: queued messages, shared and executor state, fan-in buffers, requests."""
    start(debug, json_output)
    with reported():
        with_imports(imports)
        cp = asyncio.run(
            _in_store(RedisTarget.resolve(redis), prefix, lambda s: s.load_checkpoint(checkpoint_id))
        )
        record = {"type": "checkpoint", **jsonable(cp)}
        if json_output:
            print(dumps(record))
        else:
            new_console().print_json(dumps(record))


@checkpoints_app.command("delete", epilog=EXIT_CODES_HELP)
def checkpoints_delete(
    checkpoint_ids: Annotated[list[str], typer.Argument(metavar="CHECKPOINT_ID...")],
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Delete checkpoints (exit 2 if one of them does not exist)."""
    start(debug)

    async def delete_all(store: Store) -> list[str]:
        return [cid for cid in checkpoint_ids if not await store.delete_checkpoint(cid)]

    with reported():
        missing = asyncio.run(_in_store(RedisTarget.resolve(redis), prefix, delete_all))
        for cid in checkpoint_ids:
            if cid not in missing:
                print(f"deleted {cid}")
        if missing:
            raise CliError(f"no such checkpoint(s) under prefix {prefix!r}: {', '.join(missing)}")


async def _in_store(target: RedisTarget, prefix: str, work: Any) -> Any:
    store = await backends.redis_store(target, prefix)
    try:
        return await work(store)
    finally:
        await backends.close_store(store)


async def _on_workflow(
    builder: WorkflowBuilder, instance_id: str, target: RedisTarget, prefix: str, work: Any
) -> Any:
    return await _in_store(
        target, prefix, lambda store: work(builder.build(instance_id=instance_id, store=store))
    )


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
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Make a checkpoint the instance's state again, without running (writes a copy whose parent it is)."""
    start(debug)
    with reported():
        instance_id = instance or Store.instance_of(checkpoint_id)
        if instance_id is None:
            raise CliError(
                f"{checkpoint_id!r} is not a barrierflow checkpoint id (INSTANCE@HEX); pass --instance"
            )
        builder = load_builder(target)
        location = RedisTarget.resolve(redis)
        new_id = asyncio.run(
            _on_workflow(builder, instance_id, location, prefix, lambda wf: wf.restore(checkpoint_id))
        )
        print(f"restored {checkpoint_id} into instance {instance_id} as checkpoint {new_id}")
        print(
            "continue it with: "
            + answer_command(target, instance_id, location.url, False, prefix, None, None)
        )


@app.command(epilog=EXIT_CODES_HELP)
def reset(
    target: Target,
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    create: Annotated[
        bool,
        typer.Option(
            "--create", help="Start INSTANCE empty if it has no checkpoint yet (otherwise that is refused)."
        ),
    ] = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Clean slate for INSTANCE: drop queued work, state and pending requests (its old checkpoints remain)."""
    start(debug)
    location = RedisTarget.resolve(redis)

    async def reset_existing(wf: Workflow) -> str:
        if not create and await wf.store.latest_id(instance) is None:
            raise CliError(
                f"no instance {instance!r} under prefix {prefix!r} in Redis {backends.redact(location.url)}: "
                "check the id (barrierflow status INSTANCE), or pass --create to start it empty"
            )
        return await wf.reset_for_new_run()

    with reported():
        builder = load_builder(target)
        new_id = asyncio.run(_on_workflow(builder, instance, location, prefix, reset_existing))
        print(f"reset instance {instance}: new empty checkpoint {new_id}")


@app.command(epilog=EXIT_CODES_HELP)
def delete(
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Delete everything INSTANCE has in Redis: checkpoints, epoch, workers' records (refused while it runs)."""
    start(debug)
    with reported():
        location = RedisTarget.resolve(redis)
        count = asyncio.run(_in_store(location, prefix, lambda store: store.delete_instance(instance)))
        print(f"deleted instance {instance}: {count} key(s)" if count else f"no keys of instance {instance}")


@app.command(epilog=EXIT_CODES_HELP)
def status(
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    imports: Imports = None,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """Who holds INSTANCE (lock owner, TTL, epoch), its latest checkpoint and its pending requests.

    Without the workflow's modules (-I) the lease, epoch, latest checkpoint id, superstep and request ids are
    still shown; what could not be decoded is named.
    """
    start(debug, json_output)
    with reported():
        with_imports(imports)
        location = RedisTarget.resolve(redis)
        reservation, latest = asyncio.run(_in_store(location, prefix, lambda s: _status(s, instance)))
        record = _status_record(instance, reservation, latest, location.url, prefix)
        if json_output:
            print(dumps(record))
        else:
            _print_status(record)


async def _status(store: Store, instance: str) -> tuple[Any, StoredCheckpoint | None]:
    return await store.describe(instance), await latest_stored(store, instance)


def _status_record(
    instance: str, reservation: Any, latest: StoredCheckpoint | None, redis_url: str, prefix: str
) -> dict[str, Any]:
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
        "state": "unknown instance" if latest is None else "idle",
        "pending_requests": [],
    }
    if latest is None:
        return record
    summary, cp = latest.summary, latest.checkpoint
    record["latest_checkpoint"] = summary_record(latest)
    if latest.undecoded is not None:
        record["undecoded"] = record["latest_checkpoint"]["undecoded"]
    if reservation.held:
        record["state"] = "running"
    elif summary.queued_messages:
        record["state"] = (
            f"unfinished: {summary.queued_messages} message(s) queued (continue with run --instance)"
        )
    elif summary.pending_request_ids:
        record["state"] = RunState.IDLE_WITH_PENDING_REQUESTS.value
    target = factory_target(summary.workflow_name) or "MODULE:FACTORY"
    requests = cp.pending_requests if cp is not None else dict.fromkeys(summary.pending_request_ids)
    for request_id, request in requests.items():
        kind = (
            None
            if request is None
            else getattr(request.response_type, "__name__", str(request.response_type))
        )
        record["pending_requests"].append(
            {
                "request_id": request_id,
                "executor_id": None if request is None else request.source_executor_id,
                "data": None if request is None else jsonable(request.data),
                "response_type": kind,
                "command": answer_command(
                    target, instance, redis_url, False, prefix, request_id, example_answer(kind)
                ),
            }
        )
    return record


def _print_status(record: dict[str, Any]) -> None:
    from rich.markup import escape

    console = new_console()
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
        f"{cp['superstep']}, {cp['created_at']})",
        soft_wrap=True,
    )
    if "undecoded" in record:
        console.print(f"  undecoded {escape(record['undecoded'])}", soft_wrap=True, highlight=False)
    for request in record["pending_requests"]:
        if request["response_type"] is None:
            console.print(f"  pending   {escape(request['request_id'])} (not decoded)", soft_wrap=True)
        else:
            console.print(
                f"  pending   {escape(request['request_id'])} from {escape(str(request['executor_id']))} "
                f"expects {escape(request['response_type'])}: {escape(dumps(request['data']))}",
                soft_wrap=True,
            )
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
    start(debug)
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
    broker: Broker = None,
    debug: Debug = False,
) -> None:
    """Start a Celery worker for barrierflow (`celery -A barrierflow.workers.app worker`, without mingle and gossip).

    The options win over the environment (BARRIERFLOW_REDIS_URL, _PREFIX, _QUEUE, _BROKER_URL), even when an
    imported module imported barrierflow.workers first. The worker lists itself in the worker registry while it
    consumes (see `barrierflow workers`). Mingle and gossip are off: at start-up mingle broadcasts to every other
    worker and collects their replies (revoked task ids), and replies that arrive late leave keys without a TTL
    in the broker's Redis; gossip follows other workers' events. barrierflow needs neither: it revokes nothing,
    and coordinators find workers in the registry. Remote control stays on (revoke, shutdown, `celery
    control`), and so do events for Flower when asked for (-E).
    """
    start(debug)
    with reported():
        modules = import_modules([*env_imports(), *(imports or [])])
        if not modules:
            print(
                "warning: no workflow modules to import (--import MODULE or BARRIERFLOW_IMPORTS): this worker "
                "will refuse every task",
                file=sys.stderr,
            )
        celery_app = backends.celery_app(
            redis_url=redis, prefix=prefix, queue=queue, broker_url=broker, imports=modules
        )
        backends.check_broker(celery_app)
        argv = ["worker", f"--loglevel={loglevel}", *WORKER_FLAGS]
        if concurrency is not None:
            argv.append(f"--concurrency={concurrency}")
        if pool is not None:
            argv.append(f"--pool={pool}")
        if hostname is not None:
            argv.append(f"--hostname={hostname}")
        argv += [f"--queues={celery_app.conf.task_default_queue}", *ctx.args]
        start_worker(celery_app, argv)


@app.command(
    epilog="Exit codes: 0 the workers asked for are live, 1 a --node or --queue asked for has no live worker "
    "(or none is live at all), 2 bad input, 3 Redis unreachable."
)
def workers(
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            "-n",
            metavar="NAME@HOST",
            help="Exit 1 unless this worker is live (repeatable): a health check, e.g. --node celery@$HOSTNAME.",
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", "-Q", help="Only the workers consuming this queue; exit 1 when there is none."
        ),
    ] = None,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """List the live workers from the worker registry in Redis: node, queues, slots, version, last heartbeat.

    Reads Redis only and asks the workers nothing: unlike `celery inspect ping`, it leaves no reply key
    behind, which makes it the workers' health check (docker-compose.yml). A worker is live while its
    heartbeat (every BARRIERFLOW_WORKER_HEARTBEAT s, default 5) is less than three beats old.
    """
    use_json = json_output or not sys.stdout.isatty()
    start(debug, use_json)
    with reported():
        location = RedisTarget.resolve(redis)
        report = asyncio.run(
            _in_store(
                location,
                prefix,
                lambda store: WorkersReport.read(store.client, prefix, location.url, queue, node or []),
            )
        )
        if use_json:
            for record in report.records():
                print(dumps(record))
        else:
            _print_workers(report)
        problems = report.problems()
        for problem in problems:
            if use_json:
                print(dumps({"type": "missing", "message": problem}))
            print(f"unhealthy: {problem}", file=sys.stderr)
        if problems:
            raise typer.Exit(EXIT_NOT_LIVE)


def _print_workers(report: WorkersReport) -> None:
    from rich.table import Table

    console = new_console()
    records = report.records()
    if not records:
        return
    table = Table()
    for title in ("node", "queues", "slots", "pool", "pid", "version", "beat"):
        table.add_column(title, no_wrap=True)
    for record in records:
        version = record["version"] or "?"
        if not record["same_version"]:
            version += f" (other wire layout {record['layout']})"
        table.add_row(
            record["node"],
            ", ".join(record["queues"]),
            str(record["slots"]),
            record["pool"],
            str(record["pid"]),
            version,
            f"{record['age']:.1f} s ago",
        )
    console.print(table)


def start_worker(celery_app: Any, argv: list[str]) -> None:
    """Hand over to Celery (it blocks until the worker stops)."""
    celery_app.worker_main(argv)


def main() -> None:
    app(prog_name="barrierflow")


if __name__ == "__main__":
    main()
