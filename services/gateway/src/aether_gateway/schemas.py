"""The gateway's wire models (pydantic): the bases every route's models derive from, and
`/api/status`'s answer. Each upstream's own models sit in its package (`auth/schemas.py`,
`chat/schemas.py`, `ai/schemas.py`, `memory/schemas.py`); protobuf never reaches a client.

Requests are strict (unknown fields and type coercion refused); answers are snake_case.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    """Base of every request body: unknown fields and type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DependencyStatus(Response):
    ok: bool
    latency_ms: float
    error: str | None = None


class StatusOut(Response):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    dependencies: dict[str, DependencyStatus]
