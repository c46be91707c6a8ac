"""The API's request bodies and answers as pydantic models: they validate what comes in and are what
``/openapi.json`` describes (the schemathesis tests check every answer against them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Longest wait a submission may ask for, in seconds (a client wanting longer follows the run's events).
MAX_WAIT = 3600.0


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"type", "message"}}``."""

    error: ErrorDetail


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any = Field(None, description="A new run's input, converted to the start executor's type.")
    instance_id: str | None = Field(None, min_length=1, max_length=200, description="Default: a new one.")
    responses: dict[str, Any] | None = Field(None, description="Answers to pending requests, by request id.")
    checkpoint_id: str | None = Field(None, min_length=1, max_length=300)
    strategy: Literal["enqueue", "reject"] = "enqueue"
    wait: float | None = Field(None, ge=0, le=MAX_WAIT, description="Seconds to wait for the run to end.")


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_id: str = Field(min_length=1, max_length=300)


class Health(BaseModel):
    redis: str


class WorkflowSummary(BaseModel):
    name: str
    signature: str
    executors: list[str]
    start_executor: str
    mermaid: str


class Ticket(BaseModel):
    run_id: str
    instance_id: str
    state: str


class Request(BaseModel):
    request_id: str | None
    executor_id: str | None
    data: Any = None
    response_type: str | None


class RunRecord(BaseModel):
    run_id: str
    instance_id: str
    workflow_name: str
    state: str
    status: str | None
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    coordinator: str | None
    checkpoint_id: str | None
    outputs: list[Any]
    pending_requests: dict[str, Request]
    error: dict[str, Any] | None
    metadata: dict[str, Any]


class Cancelled(BaseModel):
    cancelled: bool


class InstanceRecord(BaseModel):
    instance_id: str
    workflow_name: str | None
    status: str
    checkpoint_id: str | None
    superstep: int
    pending_requests: dict[str, Request]
    active_run_id: str | None
    queued_run_ids: list[str]
    holder: dict[str, Any] | None
    updated_at: str | None


class CheckpointRecord(BaseModel):
    checkpoint_id: str
    previous_checkpoint_id: str | None
    superstep: int
    created_at: str
    queued: int
    pending: list[str]
    run_id: str | None = None
    metadata: dict[str, Any] | None = None


class Reset(BaseModel):
    checkpoint_id: str


class Restored(BaseModel):
    checkpoint_id: str
    restored_from: str
