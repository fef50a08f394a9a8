"""The JSON document of ExportMyData (the GDPR export; pydantic, versioned): everything the AI
service holds keyed by the user: conversations with their messages, the request log (usage per
answer), the daily usage aggregates, the default-mode preference and the asynchronous jobs still
in ai's own job table (docs/gdpr-export.md). Cache entries are not listed: they are keyed by a
hash of the prompt, not by user, and expire within the cache TTL.

`UserExport.document(user_id)` reads it all in one transaction (a consistent snapshot), so a
message appended meanwhile is either in the document with its conversation or not at all.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from aether_ai import repository, schemas
from aether_common.postgres import PostgresDatabase, UnitOfWork

# Bumped when a field changes meaning or goes away (adding one keeps it).
VERSION = 1


class ExportedMessage(BaseModel):
    role: str
    content: str
    mode: str
    model: str
    created_at: datetime


class ExportedConversation(BaseModel):
    id: uuid.UUID
    title: str
    mode: str
    created_at: datetime
    updated_at: datetime
    messages: list[ExportedMessage]


class ExportedRequest(BaseModel):
    """One answered request (an agent's part of an answer) and what it cost."""

    request_id: str
    conversation_id: str
    kind: str
    mode: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: int
    first_token_ms: int
    cached: bool
    created_at: datetime


class ExportedUsageDay(BaseModel):
    day: date
    model: str
    requests: int
    cached_requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class ExportedPreferences(BaseModel):
    # None: never set (the service's default mode applies).
    mode: str | None
    updated_at: datetime | None


class ExportedJob(BaseModel):
    """An asynchronous answer from ai's own job table (new ones live in the worker)."""

    id: uuid.UUID
    status: str
    attempts: int
    message: str
    mode: str
    conversation_id: str
    answer: str
    error: str
    created_at: datetime
    finished_at: datetime | None


class DataExport(BaseModel):
    service: Literal["ai"] = "ai"
    version: int = VERSION
    exported_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    user_id: str
    preferences: ExportedPreferences
    conversations: list[ExportedConversation]
    requests: list[ExportedRequest]
    usage_daily: list[ExportedUsageDay]
    jobs: list[ExportedJob]

    def counts(self) -> dict[str, int]:
        return {
            "conversations": len(self.conversations),
            "messages": sum(len(c.messages) for c in self.conversations),
            "requests": len(self.requests),
            "usage_days": len(self.usage_daily),
            "jobs": len(self.jobs),
        }


def _job(row: Any) -> ExportedJob:
    query = schemas.chat_query_from_bytes(row["request"])
    return ExportedJob(
        id=row["id"],
        status=row["status"],
        attempts=row["attempts"],
        message=query.message,
        mode=query.mode,
        conversation_id=row["conversation_id"],
        answer=row["answer"],
        error=row["error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


async def collect(uow: UnitOfWork, user_id: str) -> DataExport:
    conn = uow.conn
    await repository.repeatable_read(conn)
    messages: dict[uuid.UUID, list[ExportedMessage]] = defaultdict(list)
    for m in await repository.export_messages(conn, user_id):
        messages[m["conversation_id"]].append(
            ExportedMessage(
                role=m["role"],
                content=m["content"],
                mode=m["mode"],
                model=m["model"],
                created_at=m["created_at"],
            )
        )
    preference = await repository.export_preference(conn, user_id)
    return DataExport(
        user_id=user_id,
        preferences=ExportedPreferences(
            mode=preference["mode"] if preference else None,
            updated_at=preference["updated_at"] if preference else None,
        ),
        conversations=[
            ExportedConversation(
                id=c["id"],
                title=c["title"],
                mode=c["mode"],
                created_at=c["created_at"],
                updated_at=c["updated_at"],
                messages=messages.get(c["id"], []),
            )
            for c in await repository.export_conversations(conn, user_id)
        ],
        requests=[
            ExportedRequest.model_validate(dict(r))
            for r in await repository.export_requests(conn, user_id)
        ],
        usage_daily=[
            ExportedUsageDay.model_validate(dict(d))
            for d in await repository.export_usage_days(conn, user_id)
        ],
        jobs=[_job(j) for j in await repository.export_jobs(conn, user_id)],
    )


class UserExport:
    """Reads a user's export (one transaction: a consistent snapshot of their rows)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def document(self, user_id: str) -> DataExport:
        return await self._db.transaction(lambda uow: collect(uow, user_id))
