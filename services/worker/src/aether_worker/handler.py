"""What a job type is, as the job system sees it: its parameters' model, who may submit it, its
attempt limit and concurrency, and the code that runs one attempt (docs/worker.md "Job types").

A handler gets a `JobContext` (its job, progress, cancellation, artifacts) and the validated
parameters, and returns the result, a small JSON object. It must be safe to run again: an
attempt killed mid-way is started again, and only the attempt holding the job's current attempt
token may record a result (the runner fences the others off).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel


class JobCancelled(Exception):
    """Raised by `JobContext.checkpoint()` once the job's cancellation was asked for."""


class JobFailed(Exception):
    """An attempt that failed with a known cause. `retryable=False` fails the job at once (bad
    data that a retry cannot fix); otherwise the runner retries until the type's limit."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class JobContext(Protocol):
    job_id: str
    owner_id: str
    # 1 for the first attempt.
    attempt: int

    async def progress(self, percent: int, message: str = "") -> None:
        """Records progress (0-100) and is a checkpoint: raises JobCancelled when cancelled."""
        ...

    async def checkpoint(self) -> None:
        """Raises JobCancelled when the job's cancellation was asked for."""
        ...

    async def put_artifact(self, name: str, data: bytes, content_type: str) -> None:
        """Stores a large output in S3 under this job; the job's answer lists it with a signed
        URL. Storing the same name again (a retried attempt) replaces it."""
        ...


Run = Callable[[JobContext, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class JobType:
    """`params`: the pydantic model the JSON parameters must fit (validated before the job is
    accepted: an error is INVALID_ARGUMENT naming the field). `runs`: how many runs the params
    ask for (a sweep's size), checked against the plan's sweep quota. `user_may_submit`: users
    may submit it (else operators only)."""

    name: str
    params: type[BaseModel]
    run: Run
    user_may_submit: bool
    max_attempts: int = 3
    # Attempts of this type running at once per worker process.
    concurrency: int = 2
    timeout_s: float = 600.0
    runs: Callable[[Any], int] = lambda _params: 1
