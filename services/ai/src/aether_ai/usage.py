"""Usage and cost: one row per answered request, a per-user daily aggregate, and the event.

`record()` is idempotent by request id (a retried write counts once and publishes once).
`performance()` reads the request rows of every replica; the caller adds this replica's live
figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aether.ai.v1 import ai_pb2, events_pb2
from aether_ai import repository
from aether_ai.events import request_completed
from aether_common.errors import ValidationFailed
from aether_common.events import outbox_pg
from aether_common.postgres import PostgresDatabase

KINDS = frozenset({"chat", "analyze", "search", "job"})
MAX_USAGE_DAYS = 366
MAX_WINDOW_MINUTES = 10_080


@dataclass(frozen=True, slots=True)
class Completion:
    """One answered request, as the engine measured it."""

    request_id: str
    user_id: str
    conversation_id: str
    kind: str  # chat | analyze | search | job
    mode: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: int
    first_token_ms: int
    cached: bool

    def to_event_payload(self) -> events_pb2.RequestCompleted:
        return events_pb2.RequestCompleted(
            request_id=self.request_id,
            user_id=self.user_id,
            conversation_id=self.conversation_id,
            kind=self.kind,
            mode=self.mode,
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
            latency_ms=self.latency_ms,
            first_token_ms=self.first_token_ms,
            cached=self.cached,
        )


class UsageStore:
    def __init__(self, db: PostgresDatabase, *, topic_prefix: str = "") -> None:
        self._db = db
        self._topic_prefix = topic_prefix

    def rows(self, completions: Sequence[Completion]) -> list[repository.RequestRow]:
        """The completions as request rows with their events, for `record` or for an answer's
        write with its turns (Conversations.append)."""
        rows = []
        for c in completions:
            if not c.request_id or not c.user_id:
                raise ValueError("a completion needs a request id and a user id")
            if c.kind not in KINDS:
                raise ValueError(f"unknown completion kind {c.kind!r}")
            event = request_completed(c.to_event_payload(), self._topic_prefix)
            rows.append(repository.RequestRow(c, outbox_pg.outbox_row(event)))
        return rows

    async def record(self, completion: Completion) -> None:
        """The request row, the day's aggregate and the outbox event, in one statement."""
        rows = self.rows([completion])
        async with self._db.connection() as conn:
            await repository.record_exchange(conn, completion.user_id, rows)

    async def usage(self, user_id: str, days: int) -> ai_pb2.GetUsageResponse:
        """The user's usage per UTC day per model over the last `days` days (today included)."""
        if not 1 <= days <= MAX_USAGE_DAYS:
            raise ValidationFailed(
                f"days must be between 1 and {MAX_USAGE_DAYS}", field_errors={"days": "1-366"}
            )
        async with self._db.connection() as conn:
            rows = await repository.daily_usage(conn, user_id, days)
        response = ai_pb2.GetUsageResponse()
        for row in rows:
            response.days.append(
                ai_pb2.UsageDay(
                    day=row["day"].isoformat(),
                    model=row["model"],
                    requests=row["requests"],
                    prompt_tokens=row["prompt_tokens"],
                    completion_tokens=row["completion_tokens"],
                    cost_usd=row["cost_usd"],
                    cached_requests=row["cached_requests"],
                )
            )
            response.requests += row["requests"]
            response.prompt_tokens += row["prompt_tokens"]
            response.completion_tokens += row["completion_tokens"]
            response.cost_usd += row["cost_usd"]
        return response

    async def performance(self, window_minutes: int) -> ai_pb2.GetPerformanceResponse:
        """Every replica's requests of the last `window_minutes`; live fields left 0."""
        if not 1 <= window_minutes <= MAX_WINDOW_MINUTES:
            raise ValidationFailed(
                f"window_minutes must be between 1 and {MAX_WINDOW_MINUTES}",
                field_errors={"window_minutes": "1-10080"},
            )
        async with self._db.connection() as conn:
            rows = await repository.performance(conn, timedelta(minutes=window_minutes))
        response = ai_pb2.GetPerformanceResponse()
        for row in rows:
            if row["model"] is None:  # the all-models row (there even when the window is empty)
                response.requests = row["requests"]
                response.latency_p50_ms = _float(row["latency_p50"])
                response.latency_p95_ms = _float(row["latency_p95"])
                response.cache_hit_rate = _float(row["cache_hit_rate"])
                response.prompt_tokens = _int(row["prompt_tokens"])
                response.completion_tokens = _int(row["completion_tokens"])
                response.cost_usd = _float(row["cost_usd"])
                continue
            response.models.append(
                ai_pb2.ModelPerformance(
                    model=row["model"],
                    requests=row["requests"],
                    latency_p50_ms=_float(row["latency_p50"]),
                    latency_p95_ms=_float(row["latency_p95"]),
                    first_token_p50_ms=_float(row["first_token_p50"]),
                    first_token_p95_ms=_float(row["first_token_p95"]),
                    prompt_tokens=_int(row["prompt_tokens"]),
                    completion_tokens=_int(row["completion_tokens"]),
                    cost_usd=_float(row["cost_usd"]),
                    cache_hit_rate=_float(row["cache_hit_rate"]),
                )
            )
        return response


# Aggregates over no rows are NULL; averages of integers come back as Decimal.
def _float(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _int(value: Any) -> int:
    return 0 if value is None else int(value)
