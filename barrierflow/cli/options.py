"""What every ``barrierflow`` command shares: its common options, and the few steps each one starts with.

The option types are ``typing.Annotated`` aliases, so a command declares ``redis: RedisUrl = None`` and gets
the same flag, metavar and help as every other command.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .errors import EXIT_OK, Session
from .loading import env_imports, import_modules

RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis",
        metavar="URL",
        help="The Redis store (default: BARRIERFLOW_REDIS_URL, else redis://localhost:6379/0).",
        show_default=False,
    ),
]
Broker = Annotated[
    str | None,
    typer.Option(
        "--broker",
        metavar="URL",
        help="Celery's broker (default: BARRIERFLOW_BROKER_URL, else the Redis URL).",
        show_default=False,
    ),
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
LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="BARRIERFLOW_LOG_FORMAT",
        metavar="text|json",
        help="Log lines as text, or as JSON objects with run_id, instance_id and trace_id.",
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def start(debug: bool, json_output: bool = False) -> None:
    """What a command does first: the switches its error report needs."""
    Session.debug = Session.debug or debug
    Session.json = json_output


def start_logging(level: str, log_format: str) -> None:
    """A service command's logs on stderr, as ``--log-level`` and ``--log-format`` say (bad values: exit 2)."""
    from barrierflow.observability import LOG_FORMATS, log_to_stderr

    if log_format not in LOG_FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_FORMATS)}", param_hint="--log-format")
    try:
        log_to_stderr(level, log_format)
    except ValueError as exc:  # an unknown level name
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None


def new_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False)


def with_imports(imports: list[str] | None) -> list[str]:
    """Import ``--import`` modules and ``BARRIERFLOW_IMPORTS``; the module names, deduplicated."""
    return import_modules([*env_imports(), *(imports or [])])


def exit_with(code: int) -> None:
    if code != EXIT_OK:
        raise typer.Exit(code)
