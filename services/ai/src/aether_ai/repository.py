"""Every query of the AI service. Functions take a connection the caller opened (db.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aether_ai.records import Completion
from aether_common.events import outbox_pg
from aether_common.postgres import Conn

Row = Any  # an asyncpg Record


# -- exchanges: usage, events and turns ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestRow:
    """One answered request (an agent's part of an answer) and its outbox event."""

    completion: Completion
    event: tuple[str, str, bytes]  # outbox_pg.outbox_row: (event_id, topic, envelope)


@dataclass(frozen=True, slots=True)
class ConversationWrite:
    """Turns for a conversation: a new one is created with them, an existing one (the user's)
    gets them appended and moves to the top of the list."""

    id: uuid.UUID
    is_new: bool
    title: str  # a new conversation's
    mode: str  # a new conversation's; for an existing one the latest mode used ('' keeps it)
    messages: Sequence[tuple[str, str, str, str]]  # (role, content, mode, model), in order


# One statement, so one round trip and no BEGIN/COMMIT: the request rows, their share of the
# day's aggregates, their events and the turns commit together or not at all. A request id seen
# before (a retried write) counts and publishes nothing. Arrays travel as text[] (asyncpg's only
# built-in array codec besides oid[]: others cost a catalog query per connection) and are cast
# here; envelopes as hex. An existing conversation is updated before its messages are numbered
# (the insert reads `touched`), so the row lock orders concurrent appends.
_RECORD_EXCHANGE = f"""
WITH part AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[]::int[], $8::text[]::int[], $9::text[]::float8[], $10::text[]::int[],
        $11::text[]::int[], $12::text[]::bool[], $13::text[], $14::text[], $15::text[])
        WITH ORDINALITY AS p(request_id, kind, conversation_id, mode, model, prompt_tokens,
            completion_tokens, cost_usd, latency_ms, first_token_ms, cached, event_id, topic,
            envelope, n)
),
request AS (
    INSERT INTO ai_requests (request_id, user_id, conversation_id, kind, mode, model,
        prompt_tokens, completion_tokens, cost_usd, latency_ms, first_token_ms, cached)
    SELECT request_id, $1, conversation_id, kind, mode, model, prompt_tokens, completion_tokens,
        cost_usd, latency_ms, first_token_ms, cached FROM part ORDER BY n
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, model, prompt_tokens, completion_tokens, cost_usd, cached,
        (created_at AT TIME ZONE 'UTC')::date AS day
),
daily AS (
    INSERT INTO ai_usage_daily AS u (user_id, day, model, requests, cached_requests,
        prompt_tokens, completion_tokens, cost_usd)
    SELECT $1, day, model, count(*), count(*) FILTER (WHERE cached), sum(prompt_tokens),
        sum(completion_tokens), sum(cost_usd)
    FROM request GROUP BY day, model
    ON CONFLICT (user_id, day, model) DO UPDATE SET
        requests = u.requests + EXCLUDED.requests,
        cached_requests = u.cached_requests + EXCLUDED.cached_requests,
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
        cost_usd = u.cost_usd + EXCLUDED.cost_usd
),
event AS (
    INSERT INTO {outbox_pg.OUTBOX_TABLE} (event_id, topic, envelope)
    SELECT part.event_id, part.topic, decode(part.envelope, 'hex')
    FROM part JOIN request USING (request_id) ORDER BY part.n
),
created AS (
    INSERT INTO ai_conversations (id, user_id, title, mode, message_count, updated_at)
    SELECT $16, $1, $18, $19, cardinality($20::text[]), clock_timestamp() WHERE $17
    RETURNING id
),
touched AS (
    UPDATE ai_conversations SET
        message_count = message_count + cardinality($20::text[]),
        updated_at = clock_timestamp(),
        mode = CASE WHEN $19 = '' THEN mode ELSE $19 END
    WHERE NOT $17 AND id = $16 AND user_id = $1
    RETURNING id
),
conversation AS (SELECT id FROM created UNION ALL SELECT id FROM touched),
message AS (
    INSERT INTO ai_messages (conversation_id, role, content, mode, model)
    SELECT conversation.id, m.role, m.content, m.mode, m.model
    FROM conversation, unnest($20::text[], $21::text[], $22::text[], $23::text[])
        WITH ORDINALITY AS m(role, content, mode, model, n)
    ORDER BY m.n
)
SELECT EXISTS (SELECT FROM conversation)
"""  # noqa: S608 (a constant)


def _request_texts(row: RequestRow) -> tuple[str, ...]:
    c, (event_id, topic, envelope) = row.completion, row.event
    return (
        c.request_id,
        c.kind,
        c.conversation_id,
        c.mode,
        c.model,
        str(c.prompt_tokens),
        str(c.completion_tokens),
        repr(c.cost_usd),
        str(c.latency_ms),
        str(c.first_token_ms),
        "true" if c.cached else "false",
        event_id,
        topic,
        envelope.hex(),
    )


def _text_columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[str]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


async def record_exchange(
    conn: Conn,
    user_id: str,
    requests: Sequence[RequestRow],
    conversation: ConversationWrite | None = None,
) -> bool:
    """Writes an exchange in one statement (see above); False when `conversation` is an
    existing one that is not (or no longer) the user's: then no turns were written."""
    request_columns = _text_columns([_request_texts(r) for r in requests], 14)
    w = conversation
    stored: bool = await conn.fetchval(
        _RECORD_EXCHANGE,
        user_id,
        *request_columns,
        w.id if w else None,
        w.is_new if w else False,
        w.title if w else "",
        w.mode if w else "",
        *_text_columns(w.messages if w else [], 4),
    )
    return stored or w is None


async def daily_usage(conn: Conn, user_id: str, days: int) -> list[Row]:
    """The user's aggregates of the last `days` UTC days (today included), newest day first."""
    rows: list[Row] = await conn.fetch(
        """
        SELECT day, model, requests, cached_requests, prompt_tokens, completion_tokens, cost_usd
        FROM ai_usage_daily
        WHERE user_id = $1 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int
        ORDER BY day DESC, model
        """,
        user_id,
        days,
    )
    return rows


async def performance(conn: Conn, window: timedelta) -> list[Row]:
    """One row per model plus the all-models row (model NULL), over every replica's requests."""
    rows: list[Row] = await conn.fetch(
        """
        SELECT model,
            count(*) AS requests,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY first_token_ms) AS first_token_p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY first_token_ms) AS first_token_p95,
            sum(prompt_tokens) AS prompt_tokens,
            sum(completion_tokens) AS completion_tokens,
            sum(cost_usd) AS cost_usd,
            avg(cached::int) AS cache_hit_rate
        FROM ai_requests
        WHERE created_at >= now() - $1::interval
        GROUP BY GROUPING SETS ((model), ())
        ORDER BY model NULLS FIRST
        """,
        window,
    )
    return rows


# -- conversations -------------------------------------------------------------------------------
_CONVERSATION_COLUMNS = "id, user_id, title, mode, message_count, created_at, updated_at"


async def find_conversation(conn: Conn, user_id: str, conversation_id: uuid.UUID) -> Row | None:
    """The user's conversation (None for another user's)."""
    row: Row | None = await conn.fetchrow(
        f"SELECT {_CONVERSATION_COLUMNS} FROM ai_conversations "  # noqa: S608 (constants)
        "WHERE id = $1 AND user_id = $2",
        conversation_id,
        user_id,
    )
    return row


async def last_messages(conn: Conn, conversation_id: uuid.UUID, limit: int) -> list[Row]:
    """The conversation's last `limit` messages, oldest first."""
    rows: list[Row] = await conn.fetch(
        """
        SELECT role, content, mode, model, created_at FROM (
            SELECT id, role, content, mode, model, created_at FROM ai_messages
            WHERE conversation_id = $1 ORDER BY id DESC LIMIT $2
        ) AS last ORDER BY id
        """,
        conversation_id,
        limit,
    )
    return rows


async def all_messages(conn: Conn, conversation_id: uuid.UUID) -> list[Row]:
    rows: list[Row] = await conn.fetch(
        "SELECT role, content, mode, model, created_at FROM ai_messages "
        "WHERE conversation_id = $1 ORDER BY id",
        conversation_id,
    )
    return rows


async def list_conversations(
    conn: Conn, user_id: str, limit: int, before: datetime | None
) -> list[Row]:
    rows: list[Row] = await conn.fetch(
        f"SELECT {_CONVERSATION_COLUMNS} FROM ai_conversations "  # noqa: S608 (constants)
        "WHERE user_id = $1 AND ($2::timestamptz IS NULL OR updated_at < $2) "
        "ORDER BY updated_at DESC, id DESC LIMIT $3",
        user_id,
        before,
        limit,
    )
    return rows


async def delete_conversation(conn: Conn, user_id: str, conversation_id: uuid.UUID) -> bool:
    """Deletes it with its messages (cascade); False when the user has no such conversation."""
    status: str = await conn.execute(
        "DELETE FROM ai_conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
    )
    return status != "DELETE 0"


# -- preferences ---------------------------------------------------------------------------------
async def get_mode(conn: Conn, user_id: str) -> str | None:
    mode: str | None = await conn.fetchval(
        "SELECT mode FROM ai_preferences WHERE user_id = $1", user_id
    )
    return mode


async def set_mode(conn: Conn, user_id: str, mode: str) -> None:
    await conn.execute(
        """
        INSERT INTO ai_preferences (user_id, mode) VALUES ($1, $2)
        ON CONFLICT (user_id) DO UPDATE SET mode = EXCLUDED.mode, updated_at = now()
        """,
        user_id,
        mode,
    )


# -- jobs ----------------------------------------------------------------------------------------
JOBS_CHANNEL = "ai_jobs"  # NOTIFY on submit wakes idle runners at once

_JOB_COLUMNS = (
    "id, user_id, status, attempts, answer, usage, conversation_id, error, created_at, finished_at"
)


async def insert_job(conn: Conn, job_id: uuid.UUID, user_id: str, request: bytes) -> Row:
    row: Row = await conn.fetchrow(
        f"INSERT INTO ai_jobs (id, user_id, request, status) "  # noqa: S608 (constants)
        f"VALUES ($1, $2, $3, 'queued') RETURNING {_JOB_COLUMNS}",
        job_id,
        user_id,
        request,
    )
    await conn.execute("SELECT pg_notify($1, '')", JOBS_CHANNEL)  # delivered on commit
    return row


async def find_job(conn: Conn, user_id: str, job_id: uuid.UUID) -> Row | None:
    row: Row | None = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM ai_jobs "  # noqa: S608 (constants)
        "WHERE id = $1 AND user_id = $2",
        job_id,
        user_id,
    )
    return row


async def claim_job(conn: Conn, lease_token: uuid.UUID, lease: timedelta) -> Row | None:
    """The oldest runnable job (queued and due, or running with an expired lease), leased to
    `lease_token`; replicas skip each other's locked rows instead of waiting on them."""
    row: Row | None = await conn.fetchrow(
        """
        UPDATE ai_jobs AS j SET
            status = 'running',
            attempts = j.attempts + 1,
            lease_token = $1,
            lease_until = now() + $2::interval,
            started_at = coalesce(j.started_at, now())
        FROM (
            SELECT id FROM ai_jobs
            WHERE (status = 'queued' AND run_after <= now())
               OR (status = 'running' AND lease_until < now())
            ORDER BY created_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) AS next
        WHERE j.id = next.id
        RETURNING j.id, j.user_id, j.request, j.attempts
        """,
        lease_token,
        lease,
    )
    return row


async def extend_lease(
    conn: Conn, job_id: uuid.UUID, lease_token: uuid.UUID, lease: timedelta
) -> bool:
    """False when the lease was lost (it expired and another runner claimed the job)."""
    status: str = await conn.execute(
        "UPDATE ai_jobs SET lease_until = now() + $3::interval "
        "WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        job_id,
        lease_token,
        lease,
    )
    return status != "UPDATE 0"


async def succeed_job(
    conn: Conn,
    job_id: uuid.UUID,
    lease_token: uuid.UUID,
    *,
    answer: str,
    usage: bytes,
    conversation_id: str,
) -> bool:
    status: str = await conn.execute(
        """
        UPDATE ai_jobs SET status = 'succeeded', answer = $3, usage = $4, conversation_id = $5,
            error = '', finished_at = now(), lease_token = NULL, lease_until = NULL
        WHERE id = $1 AND lease_token = $2
        """,
        job_id,
        lease_token,
        answer,
        usage,
        conversation_id,
    )
    return status != "UPDATE 0"


async def fail_job(conn: Conn, job_id: uuid.UUID, lease_token: uuid.UUID, error: str) -> bool:
    status: str = await conn.execute(
        """
        UPDATE ai_jobs SET status = 'failed', error = $3, finished_at = now(),
            lease_token = NULL, lease_until = NULL
        WHERE id = $1 AND lease_token = $2
        """,
        job_id,
        lease_token,
        error,
    )
    return status != "UPDATE 0"


async def retry_job(
    conn: Conn, job_id: uuid.UUID, lease_token: uuid.UUID, delay: timedelta
) -> bool:
    """Back to the queue after a failed attempt, runnable again after `delay`."""
    status: str = await conn.execute(
        """
        UPDATE ai_jobs SET status = 'queued', run_after = now() + $3::interval,
            lease_token = NULL, lease_until = NULL
        WHERE id = $1 AND lease_token = $2
        """,
        job_id,
        lease_token,
        delay,
    )
    return status != "UPDATE 0"


async def release_job(conn: Conn, job_id: uuid.UUID, lease_token: uuid.UUID) -> bool:
    """Back to the queue, the interrupted attempt not counted (this runner is stopping)."""
    status: str = await conn.execute(
        """
        UPDATE ai_jobs SET status = 'queued', attempts = greatest(attempts - 1, 0),
            run_after = now(), lease_token = NULL, lease_until = NULL
        WHERE id = $1 AND lease_token = $2
        """,
        job_id,
        lease_token,
    )
    return status != "UPDATE 0"


# -- erasure -------------------------------------------------------------------------------------
async def erase_user(conn: Conn, user_id: str) -> dict[str, int]:
    """Everything personal of the user (messages go with their conversations); rows per table.

    The daily aggregates stay: they hold counts and cost only, kept for billing.
    """
    erased: dict[str, int] = {}
    for table in ("ai_conversations", "ai_jobs", "ai_preferences", "ai_requests"):
        status: str = await conn.execute(
            f"DELETE FROM {table} WHERE user_id = $1",  # noqa: S608 (constant table names)
            user_id,
        )
        erased[table] = int(status.rsplit(" ", 1)[-1])
    return erased


# -- retention ------------------------------------------------------------------------------
async def purge_requests(conn: Conn, older_than: timedelta) -> int:
    status: str = await conn.execute(
        "DELETE FROM ai_requests WHERE created_at < now() - $1::interval", older_than
    )
    return int(status.rsplit(" ", 1)[-1])


async def purge_finished_jobs(conn: Conn, older_than: timedelta) -> int:
    status: str = await conn.execute(
        "DELETE FROM ai_jobs WHERE status IN ('succeeded', 'failed') "
        "AND finished_at < now() - $1::interval",
        older_than,
    )
    return int(status.rsplit(" ", 1)[-1])


# -- the GDPR export -------------------------------------------------------------------------
async def repeatable_read(conn: Conn) -> None:
    """The transaction's first statement: every later read sees one snapshot."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


async def export_conversations(conn: Conn, user_id: str) -> list[Row]:
    rows: list[Row] = await conn.fetch(
        f"SELECT {_CONVERSATION_COLUMNS} FROM ai_conversations "  # noqa: S608 (constants)
        "WHERE user_id = $1 ORDER BY created_at, id",
        user_id,
    )
    return rows


async def export_messages(conn: Conn, user_id: str) -> list[Row]:
    """Every message of the user's conversations, each conversation's in order."""
    rows: list[Row] = await conn.fetch(
        """
        SELECT m.conversation_id, m.role, m.content, m.mode, m.model, m.created_at
        FROM ai_messages m JOIN ai_conversations c ON c.id = m.conversation_id
        WHERE c.user_id = $1 ORDER BY m.conversation_id, m.id
        """,
        user_id,
    )
    return rows


async def export_requests(conn: Conn, user_id: str) -> list[Row]:
    rows: list[Row] = await conn.fetch(
        "SELECT request_id, conversation_id, kind, mode, model, prompt_tokens, "
        "completion_tokens, cost_usd, latency_ms, first_token_ms, cached, created_at "
        "FROM ai_requests WHERE user_id = $1 ORDER BY created_at, request_id",
        user_id,
    )
    return rows


async def export_usage_days(conn: Conn, user_id: str) -> list[Row]:
    rows: list[Row] = await conn.fetch(
        "SELECT day, model, requests, cached_requests, prompt_tokens, completion_tokens, "
        "cost_usd FROM ai_usage_daily WHERE user_id = $1 ORDER BY day, model",
        user_id,
    )
    return rows


async def export_preference(conn: Conn, user_id: str) -> Row | None:
    row: Row | None = await conn.fetchrow(
        "SELECT mode, updated_at FROM ai_preferences WHERE user_id = $1", user_id
    )
    return row


async def export_jobs(conn: Conn, user_id: str) -> list[Row]:
    rows: list[Row] = await conn.fetch(
        f"SELECT {_JOB_COLUMNS}, request FROM ai_jobs "  # noqa: S608 (constants)
        "WHERE user_id = $1 ORDER BY created_at, id",
        user_id,
    )
    return rows
