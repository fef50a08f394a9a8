"""Wire models (pydantic) of `/api/jobs/*` and of the documents' root `/jobs/{id}`: strict
requests whose bounds mirror protos/aether/worker/v1/worker.proto (the worker validates each
type's params and who may submit it), answers in the shapes of docs/jobs-api.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from aether_gateway.schemas import Request, Response

# `backtest`, `chart.render`, `ai.generate`...: the worker knows the types, the gateway only
# keeps the name sane.
TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}$"
JOB_ID_PATTERN = r"^[\w.:-]{1,128}$"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

JobType = Annotated[str, StringConstraints(pattern=TYPE_PATTERN)]
Status = Literal["queued", "running", "completed", "failed", "cancelled"]
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


# -- requests ------------------------------------------------------------------------------------
class JobIn(Request):
    type: JobType = Field(description="backtest, chart.render, ai.generate, gdpr.export, ...")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the type's parameters (a JSON object)"
    )
    priority: Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)] = Field(
        default=0, description="higher runs first within a type"
    )
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="the same key answers the job it created the first time"
    )


# -- responses -----------------------------------------------------------------------------------
class ArtifactOut(Response):
    name: str
    content_type: str
    size: int
    url: str = Field(description="a signed S3 URL")
    url_expires_at: str | None


class JobErrorOut(Response):
    code: str = Field(description='e.g. "timeout", "invalid_data", "handler_error", "cancelled"')
    message: str


class JobOut(Response):
    id: str
    type: str
    params: dict[str, Any]
    owner_id: str
    priority: int
    status: str = Field(description="queued | running | completed | failed | cancelled")
    progress: int = Field(description="0-100")
    progress_message: str
    attempts: int = Field(description="attempts started so far")
    max_attempts: int
    result: Any = Field(description="the result JSON once completed, else null")
    artifacts: list[ArtifactOut]
    error: JobErrorOut | None = Field(description="when failed or cancelled")
    cancel_requested: bool
    retry_at: str | None = Field(
        description="when the next attempt is due (queued after a failure)"
    )
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    expires_at: str | None = Field(description="until when the job and its artifacts are kept")


class JobsOut(Response):
    jobs: list[JobOut] = Field(description="newest first")
    next_cursor: str | None


class DocumentJobQueuedOut(Response):
    """`POST /generate?async=true` (the platform documents' shape)."""

    job_id: str
    status: str


class DocumentJobOut(Response):
    """`GET /jobs/{id}` (the platform documents' shape)."""

    job_id: str
    status: str = Field(description="queued | running | completed | failed | cancelled")
    progress: int
    result: Any
    error: JobErrorOut | None
    created_at: str | None
    finished_at: str | None
