"""The run queue on the command line: ``coordinator``, ``submit``, ``runs show|wait|cancel|list``, ``watch``.

``submit`` puts a run in the queue (``RunQueue``) and returns, or follows it (``--follow``) or waits for its
result (``--wait``); ``barrierflow coordinator`` is the long-running service that takes runs and executes them
(``Coordinator``), in process or on Celery workers (``--celery``). Everything goes through Redis, so these
commands may run on different machines. ``register(app)`` adds them to the ``barrierflow`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from barrierflow import records
from barrierflow.engine import EventType, RunResult, RunState, WorkflowEvent

from . import backends
from .backends import RedisTarget
from .errors import EXIT_CODES_HELP, EXIT_OK, CliError, reported
from .loading import coerce_answer, load_builder, parse_responses, read_input
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
from .render import JsonRenderer, LiveRenderer, dumps, jsonable

#: ``--wait`` without a number waits this long (seconds): as good as forever.
WAIT_FOREVER = "forever"


class _BareWait(TyperCommand):
    """Lets ``--wait`` stand alone (wait as long as it takes) or take SECONDS, as ``--wait [SECONDS]``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        fixed = []
        for i, arg in enumerate(args):
            following = args[i + 1] if i + 1 < len(args) else None
            if arg == "--wait" and not _is_number(following):
                arg = f"--wait={WAIT_FOREVER}"
            fixed.append(arg)
        return super().parse_args(ctx, fixed)


def _is_number(text: str | None) -> bool:
    try:
        return text is not None and float(text) >= 0
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def _queue(redis: str | None, prefix: str) -> AsyncIterator[Any]:
    """A ``RunQueue`` on a store that answered a ping; both closed on the way out."""
    from barrierflow.broker import RunQueue

    store = await backends.redis_store(RedisTarget.resolve(redis), prefix)
    queue = RunQueue(store)
    try:
        yield queue
    finally:
        await queue.aclose()
        await backends.close_store(store)


# -- coordinator ------------------------------------------------------------------------------------------------


def coordinator(
    imports: Imports = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Runs driven at once.")] = 64,
    celery: Annotated[
        bool, typer.Option("--celery", help="Run the handlers on Celery workers (barrierflow worker).")
    ] = False,
    lock_ttl: Annotated[
        float,
        typer.Option(
            "--lock-ttl",
            min=0.5,
            help="Lease TTL in seconds: runs of a coordinator that dies are taken over this long after.",
        ),
    ] = 30.0,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Coordinator deaths a run survives before it fails.")
    ] = 3,
    shutdown_grace: Annotated[
        float,
        typer.Option("--shutdown-grace", help="Seconds SIGTERM may take to hand the runs in flight back."),
    ] = 30.0,
    health_file: Annotated[
        Path | None,
        typer.Option(
            "--health-file",
            metavar="PATH",
            help="Touch PATH every few seconds while the coordinator works (for container health checks).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING...")] = "INFO",
    redis: RedisUrl = None,
    broker: Broker = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Serve the run queue: take submitted runs and execute them, until SIGTERM or Ctrl-C.

    Start as many as you like, anywhere: a run whose coordinator dies is taken over after --lock-ttl. On
    SIGTERM the runs in flight stop at their next barrier and go back to the queue for another coordinator.
    """
    start(debug)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    with reported():
        modules = with_imports(imports)
        if not modules:
            print(
                "warning: no workflow modules imported (--import MODULE or BARRIERFLOW_IMPORTS): every run "
                "will fail as an unknown workflow",
                file=sys.stderr,
            )
        asyncio.run(
            _coordinate(
                RedisTarget.resolve(redis),
                broker,
                prefix,
                concurrency,
                celery,
                lock_ttl,
                max_attempts,
                shutdown_grace,
                health_file,
            )
        )


async def _coordinate(
    redis: RedisTarget,
    broker: str | None,
    prefix: str,
    concurrency: int,
    celery: bool,
    lock_ttl: float,
    max_attempts: int,
    shutdown_grace: float,
    health_file: Path | None,
) -> None:
    from barrierflow.workers.coordinator import Coordinator

    store = await backends.redis_store(redis, prefix, lock_ttl=lock_ttl)
    dispatcher = None
    try:
        if celery:
            celery_app = backends.celery_app(redis_url=redis.url, prefix=prefix, broker_url=broker)
            backends.check_broker(celery_app)
            dispatcher = backends.celery_dispatcher(celery_app, store)
        async with Coordinator(
            store,
            dispatcher,
            concurrency=concurrency,
            max_attempts=max_attempts,
            shutdown_grace=shutdown_grace,
        ) as service:
            health = asyncio.ensure_future(_touch(health_file, service)) if health_file else None
            try:
                await service.serve()
            finally:
                if health is not None:
                    health.cancel()
    finally:
        if dispatcher is not None:
            await dispatcher.aclose()
        await backends.close_store(store)


async def _touch(path: Path, service: Any, every: float = 5.0) -> None:
    """Keep ``path``'s mtime fresh while the coordinator's loops report in (intake or heartbeat)."""
    while True:
        if time.time() - service.alive_at < max(30.0, service.store.lock_ttl):
            path.touch()
        await asyncio.sleep(every)


# -- submit -----------------------------------------------------------------------------------------------------


def submit(
    workflow: Annotated[
        str,
        typer.Argument(
            metavar="WORKFLOW",
            help="A registered workflow name, or MODULE:FACTORY (its module is imported to check the input).",
        ),
    ],
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", metavar="JSON|-", help="A new run's input as JSON ('-' reads stdin)."),
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", metavar="ID", help="The instance (default: a new one).")
    ] = None,
    respond: Annotated[
        list[str] | None,
        typer.Option(
            "--respond", metavar="ID=JSON", help="Answer a pending request (repeatable; needs --instance)."
        ),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", metavar="ID", help="Restore this checkpoint, then continue.")
    ] = None,
    reject_if_busy: Annotated[
        bool,
        typer.Option("--reject-if-busy", help="Refuse (exit 4) if the instance has a queued or running run."),
    ] = False,
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="[SECONDS]",
            help="Wait for the result (at most SECONDS); exit 1 if the run failed, 5 if it is still running.",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", help="Show the run's progress live until it ends (JSON lines off a terminal)."
        ),
    ] = False,
    imports: Imports = None,
    json_output: Json = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Submit a run to the queue; the coordinators execute it. Returns once the run is durable in Redis."""
    use_json = json_output or not sys.stdout.isatty()
    start(debug, use_json)
    with reported():
        with_imports(imports)
        timeout = None if wait in (None, WAIT_FOREVER) else float(wait)  # type: ignore[arg-type]
        code = asyncio.run(
            _submit(
                workflow,
                input,
                instance,
                respond or [],
                checkpoint,
                reject_if_busy,
                wait is not None,
                timeout,
                follow,
                use_json,
                redis,
                prefix,
            )
        )
    if code != EXIT_OK:
        exit_with(code)


async def _submit(
    workflow: str,
    input_text: str | None,
    instance: str | None,
    respond: list[str],
    checkpoint: str | None,
    reject: bool,
    wait: bool,
    timeout: float | None,
    follow: bool,
    use_json: bool,
    redis: str | None,
    prefix: str,
) -> int:
    target: Any = load_builder(workflow) if ":" in workflow else workflow
    message = read_input(input_text)
    responses = parse_responses(respond)
    if responses and instance is None:
        raise CliError("--respond answers a waiting instance: pass --instance ID too")
    async with _queue(redis, prefix) as queue:
        if responses:
            responses = await _coerce(queue.store, instance, responses)
        ticket = await queue.submit(
            target,
            message,
            instance_id=instance,
            responses=responses or None,
            checkpoint_id=checkpoint,
            strategy="reject" if reject else "enqueue",
        )
        record = {"type": "submitted", "run_id": ticket.run_id, "instance_id": ticket.instance_id}
        if use_json:
            print(dumps(record), flush=True)
        else:
            new_console().print(f"submitted run [bold]{ticket.run_id}[/] (instance {ticket.instance_id})")
        if follow:
            return await _follow_run(queue, ticket.run_id, use_json, timeout)
        if wait:
            return await _wait_run(queue, ticket.run_id, use_json, timeout)
        if not use_json:
            new_console().print(
                f"follow it with: barrierflow runs wait {ticket.run_id} --follow", highlight=False
            )
        return EXIT_OK


async def _coerce(store: Any, instance: str | None, responses: dict[str, Any]) -> dict[str, Any]:
    """Fit each JSON answer to its request's type (as ``run --respond`` does); unknown ids are the queue's."""
    latest = await store.latest_checkpoint(instance) if instance else None
    pending = latest.pending_requests if latest is not None else {}
    return {
        rid: value if rid not in pending else coerce_answer(value, pending[rid].response_type)
        for rid, value in responses.items()
    }


# -- runs -------------------------------------------------------------------------------------------------------

runs_app = typer.Typer(help="Show, wait for, cancel and list the runs of the queue.", no_args_is_help=True)
RunId = Annotated[
    str, typer.Argument(metavar="RUN_ID", help="A run id (INSTANCE@HEX), as submit printed it.")
]


@runs_app.command("show", epilog=EXIT_CODES_HELP)
def runs_show(
    run_id: RunId,
    imports: Imports = None,
    json_output: Json = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """A run's record: state, times, attempts, coordinator, outputs, pending requests, error."""
    start(debug, json_output)
    with reported():
        with_imports(imports)
        info = asyncio.run(_on_queue(redis, prefix, lambda q: q.get(run_id)))
        record = run_record(info)
        if json_output:
            print(dumps(record))
        else:
            new_console().print_json(dumps(record))


@runs_app.command("wait", epilog=EXIT_CODES_HELP)
def runs_wait(
    run_id: RunId,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="SECONDS", help="Give up after SECONDS (exit 5).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Show its events live until it ends.")] = False,
    imports: Imports = None,
    json_output: Json = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Wait for a run to end and print its result (exit 1 if it failed or was cancelled)."""
    use_json = json_output or not sys.stdout.isatty()
    start(debug, use_json)
    with reported():
        with_imports(imports)

        async def work(queue: Any) -> int:
            if follow:
                return await _follow_run(queue, run_id, use_json, timeout)
            return await _wait_run(queue, run_id, use_json, timeout)

        code = asyncio.run(_on_queue(redis, prefix, work))
    if code != EXIT_OK:
        exit_with(code)


@runs_app.command("cancel", epilog=EXIT_CODES_HELP)
def runs_cancel(
    run_id: RunId,
    json_output: Json = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Cancel a run: queued, it never starts; running, it stops at a barrier (its instance stays there)."""
    start(debug, json_output)
    with reported():
        cancelled = asyncio.run(_on_queue(redis, prefix, lambda q: q.cancel(run_id)))
        if json_output:
            print(dumps({"type": "cancel", "run_id": run_id, "cancelled": cancelled}))
        elif cancelled:
            print(f"cancel requested for run {run_id}")
        else:
            print(f"run {run_id} had already ended: nothing to cancel")


@runs_app.command("list", epilog=EXIT_CODES_HELP)
def runs_list(
    instance: Annotated[
        str | None, typer.Option("--instance", metavar="ID", help="Only this instance's runs.")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", metavar="STATE", help="queued, running, completed, failed or cancelled."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many (newest first).")] = 50,
    imports: Imports = None,
    json_output: Json = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Runs, most recently submitted first (summaries: `runs show RUN_ID` has the outputs and requests)."""
    start(debug, json_output)
    with reported():
        with_imports(imports)
        infos = asyncio.run(
            _on_queue(redis, prefix, lambda q: q.list_runs(instance_id=instance, state=state, limit=limit))
        )
        if json_output or not sys.stdout.isatty():
            for info in infos:  # summaries: without the outputs and requests they never loaded (not "none")
                summary = {k: v for k, v in run_record(info).items() if k not in SUMMARY_OMITS}
                print(dumps(summary))
            return
        console = new_console()
        if not infos:
            console.print(
                "no runs" + (f" of instance {instance!r}" if instance else "") + f" under prefix {prefix!r}"
            )
            return
        from rich.table import Table

        table = Table(title="runs (newest first)")
        table.add_column("run", no_wrap=True)  # whole: `runs show|wait|cancel` need it
        for column in ("workflow", "state", "status", "submitted", "attempts", "coordinator"):
            table.add_column(column, overflow="fold")
        for info in infos:
            table.add_row(
                info.run_id,
                info.workflow_name,
                info.state,
                info.status.value if info.status else "-",
                info.submitted_at.isoformat(timespec="seconds") if info.submitted_at else "-",
                str(info.attempts),
                info.coordinator or "-",
            )
        console.print(table)


# -- watch ------------------------------------------------------------------------------------------------------


def watch(
    instance: Annotated[str, typer.Argument(metavar="INSTANCE")],
    after: Annotated[
        str | None,
        typer.Option(
            "--after", metavar="EVENT_ID", help="Start right after this event (default: the oldest kept)."
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow/--no-follow", help="Keep following new events (default) or stop at the end."),
    ] = True,
    imports: Imports = None,
    json_output: Json = False,
    redis: RedisUrl = None,
    prefix: Prefix = backends.DEFAULT_PREFIX,
    debug: Debug = False,
) -> None:
    """Print an instance's events (every run's), then follow new ones live until Ctrl-C."""
    use_json = json_output or not sys.stdout.isatty()
    start(debug, use_json)
    with reported():
        with_imports(imports)

        async def work(queue: Any) -> None:
            console = None if use_json else new_console()
            async for event in queue.events(instance, after=after, follow=follow):
                if console is None:
                    print(dumps(_event_line(event)), flush=True)
                else:
                    console.print(_event_text(event), highlight=False, soft_wrap=True)

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how watching ends
            asyncio.run(_on_queue(redis, prefix, work))


# -- shared -----------------------------------------------------------------------------------------------------


async def _on_queue(redis: str | None, prefix: str, work: Any) -> Any:
    async with _queue(redis, prefix) as queue:
        return await work(queue)


#: What ``RunQueue.list_runs`` leaves empty, so ``runs list`` leaves it out rather than print it empty.
SUMMARY_OMITS = ("outputs", "pending_requests")


def run_record(info: Any) -> dict[str, Any]:
    """A ``RunInfo`` as the JSON line ``runs show``/``list`` print (``type: "run"``; each pending request as
    its data)."""
    record = {"type": "run", **records.run_record(info)}
    record["pending_requests"] = {rid: jsonable(event.data) for rid, event in info.pending_requests.items()}
    return record


def _event_line(event: WorkflowEvent) -> dict[str, Any]:
    return records.event_record(event)


def _event_text(event: WorkflowEvent) -> str:
    where = f" [{event.executor_id}]" if event.executor_id else ""
    step = f" superstep {event.superstep}" if event.superstep is not None else ""
    data = "" if event.data is None else f": {dumps(jsonable(event.data))}"
    return f"{event.event_id} {event.type}{step}{where}{data} (run {event.run_id})"


async def _wait_run(queue: Any, run_id: str, use_json: bool, timeout: float | None) -> int:
    """Wait for the run's end and print it like ``barrierflow run`` prints a result."""
    try:
        result = await queue.wait(run_id, timeout=timeout)
    except TimeoutError:
        raise TimeoutError(f"run {run_id} has not ended within {timeout:g} s") from None
    info = await queue.get(run_id)
    _print_result(result, info, use_json)
    return EXIT_OK


async def _follow_run(queue: Any, run_id: str, use_json: bool, timeout: float | None) -> int:
    """Show the run's events live (the ``run`` command's display), then its result."""
    info = await queue.get(run_id)
    renderer: Any = (
        JsonRenderer()
        if use_json
        else LiveRenderer(new_console(), info.workflow_name, info.instance_id, "run queue")
    )
    try:
        async with asyncio.timeout(timeout):
            with renderer:
                async for event in queue.stream(run_id):
                    if event.type != EventType.RUN_ENDED:
                        renderer.event(event)
    except TimeoutError:
        raise TimeoutError(f"run {run_id} has not ended within {timeout:g} s") from None
    return await _wait_run(queue, run_id, use_json, None)


def _print_result(result: RunResult, info: Any, use_json: bool) -> None:
    if use_json:
        JsonRenderer().finish(result, info.instance_id, {}, None)
        return
    console = new_console()
    status = result.status
    colour = {RunState.IDLE: "green", RunState.IDLE_WITH_PENDING_REQUESTS: "cyan"}.get(status, "red")
    console.print(
        f"[{colour}]{status.value}[/] · run {info.run_id} · {len(result.outputs)} output(s) · "
        f"attempts {info.attempts} · checkpoint {result.checkpoint_id}"
    )
    for output in result.outputs:
        console.print(output if isinstance(output, str) else dumps(jsonable(output)), highlight=False)
    for request_id, event in result.pending_requests.items():
        console.print(
            f"[cyan]waiting for[/] request {request_id}: {dumps(jsonable(event.data))}\n"
            f"  answer with: barrierflow submit {info.workflow_name} --instance {info.instance_id} "
            f"--respond '{request_id}=<JSON>'",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add the run queue's commands to the ``barrierflow`` command."""
    app.command(epilog=EXIT_CODES_HELP)(coordinator)
    app.command(epilog=EXIT_CODES_HELP, cls=_BareWait)(submit)
    app.add_typer(runs_app, name="runs")
    app.command(epilog=EXIT_CODES_HELP)(watch)
