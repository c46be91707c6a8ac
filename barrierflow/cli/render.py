"""Showing a run: JSON lines for machines, a live rich display for people.

Event payloads are whatever handlers produced, so everything goes through ``jsonable``: dataclasses and
pydantic models become objects, enums their values, datetimes ISO strings, and anything else its ``repr``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from barrierflow.engine import EventType, RunResult, RunState, WorkflowEvent
from barrierflow.json_io import jsonable
from barrierflow.records import event_record


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=repr)


def response_type_name(event: WorkflowEvent) -> str | None:
    return (event.details or {}).get("response_type")


class JsonRenderer:
    """One JSON object per line on stdout, each with a ``type``: the events, then the pending requests and a
    final ``result`` line."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    def _write(self, record: dict[str, Any]) -> None:
        out = self.out or sys.stdout
        out.write(dumps(record) + "\n")
        out.flush()

    def __enter__(self) -> JsonRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def note(self, message: str) -> None:
        self._write({"type": "note", "message": message})

    def event(self, event: WorkflowEvent) -> None:
        self._write(event_record(event))

    def finish(
        self, result: RunResult, instance_id: str, commands: Mapping[str, str | None], hint: str | None
    ) -> None:
        for request_id, event in result.pending_requests.items():
            record = {
                "type": "pending_request",
                "request_id": request_id,
                "executor_id": event.executor_id,
                "data": jsonable(event.data),
                "response_type": response_type_name(event),
                "command": commands.get(request_id),
            }
            if hint and commands.get(request_id) is None:
                record["hint"] = hint
            self._write(record)
        self._write(
            {
                "type": "result",
                "status": result.status.value,
                "instance_id": instance_id,
                "run_id": result.run_id,
                "checkpoint_id": result.checkpoint_id,
                "outputs": jsonable(result.outputs),
                "pending_requests": sorted(result.pending_requests),
            }
        )


class LiveRenderer:
    """A live line on a terminal (superstep, executors running, outputs so far); outputs, requests, warnings
    and failures printed above it as they happen."""

    def __init__(self, console: Any, workflow: str, instance_id: str, where: str) -> None:
        from rich.live import Live

        self.console = console
        self.workflow = workflow
        self.instance_id = instance_id
        self.where = where
        self.superstep: int | None = None
        self.running: dict[str, int] = {}
        self.outputs = 0
        self.supersteps = 0
        self._live = Live(self._line(), console=console, transient=True, refresh_per_second=12)

    def __enter__(self) -> LiveRenderer:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)

    def _line(self) -> Any:
        from rich.spinner import Spinner

        running = ", ".join(sorted(self.running)) or "-"
        step = "-" if self.superstep is None else str(self.superstep)
        text = (
            f"[bold]{self.workflow}[/] · instance {self.instance_id} · superstep {step} · "
            f"running: {running} · outputs: {self.outputs}"
        )
        return Spinner("dots", text=text)

    def note(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/]")

    def event(self, event: WorkflowEvent) -> None:
        from rich.markup import escape
        from rich.pretty import Pretty

        kind = event.type
        if kind == EventType.SUPERSTEP_STARTED:
            self.superstep = event.superstep
            self.running.clear()
        elif kind == EventType.SUPERSTEP_COMPLETED:
            self.supersteps += 1
            self.running.clear()
        elif kind == EventType.EXECUTOR_INVOKED and event.executor_id:
            self.running[event.executor_id] = self.running.get(event.executor_id, 0) + 1
        elif kind in (EventType.EXECUTOR_COMPLETED, EventType.EXECUTOR_FAILED) and event.executor_id:
            left = self.running.get(event.executor_id, 1) - 1
            if left > 0:
                self.running[event.executor_id] = left
            else:
                self.running.pop(event.executor_id, None)
        elif kind == EventType.OUTPUT:
            self.outputs += 1
            self.console.print(
                f"[green]output[/] from [bold]{escape(str(event.executor_id))}[/] (superstep {event.superstep}):"
            )
            self.console.print(
                event.data if isinstance(event.data, str) else Pretty(event.data), highlight=False
            )
        elif kind == EventType.REQUEST_INFO:
            self.console.print(
                f"[cyan]request[/] {escape(str(event.request_id))} from [bold]{escape(str(event.executor_id))}[/]"
                f" expects {escape(str(response_type_name(event)))}:"
            )
            self.console.print(Pretty(event.data))
        elif kind == EventType.WARNING:
            self.console.print(f"[yellow]warning[/] (superstep {event.superstep}): {escape(str(event.data))}")
        elif kind == EventType.FAILED:
            who = f" in [bold]{escape(event.executor_id)}[/]" if event.executor_id else ""
            self.console.print(f"[red]failed[/]{who}: {escape(str(event.data))}")
        self._live.update(self._line())

    def finish(
        self, result: RunResult, instance_id: str, commands: Mapping[str, str | None], hint: str | None
    ) -> None:
        from rich.markup import escape
        from rich.pretty import Pretty

        status = result.status
        colour = {RunState.IDLE: "green", RunState.IDLE_WITH_PENDING_REQUESTS: "cyan"}.get(status, "red")
        self.console.print(
            f"[{colour}]{status.value}[/] · {len(result.outputs)} output(s) · {self.supersteps} superstep(s) · "
            f"instance {escape(instance_id)} ({self.where}) · checkpoint {escape(str(result.checkpoint_id))}"
        )
        if not result.pending_requests:
            return
        self.console.print(f"[cyan]waiting for {len(result.pending_requests)} answer(s):[/]")
        for request_id, event in result.pending_requests.items():
            self.console.print(
                f"  request [bold]{escape(request_id)}[/] from {escape(str(event.executor_id))} expects "
                f"{escape(str(response_type_name(event)))}:"
            )
            self.console.print(Pretty(event.data), highlight=False)
            command = commands.get(request_id)
            if command is not None:
                self.console.print(f"  answer with:\n    {escape(command)}", soft_wrap=True, highlight=False)
        if hint:
            self.console.print(f"[yellow]{escape(hint)}[/]", soft_wrap=True)
