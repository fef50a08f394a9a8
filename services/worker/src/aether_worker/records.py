"""The records the worker's modules share: a job, its artifacts, a page of jobs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE = (Status.QUEUED.value, Status.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    content_type: str
    size: int
    s3_key: str


@dataclass(frozen=True, slots=True)
class Job:
    id: uuid.UUID
    type: str
    params: dict[str, Any]
    owner_id: str
    submitted_by: str
    priority: int
    status: Status
    progress: int
    progress_message: str
    attempts: int
    max_attempts: int
    cancel_requested: bool
    result: dict[str, Any] | None
    error_code: str
    error_message: str
    dead: bool
    retry_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    expires_at: datetime | None
    idempotency_key: str = ""
    artifacts: tuple[Artifact, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Claim:
    """An attempt a worker holds: only the holder of `token` may write the job's progress and
    outcome, and only while its lease lasts (renewed by the heartbeat)."""

    job: Job
    token: uuid.UUID


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str
