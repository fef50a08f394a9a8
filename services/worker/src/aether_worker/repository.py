"""Every query of the worker service (PostgreSQL; migrations/0001_init.sql).

Tables: `jobs` (one row per job: its status, progress, attempts, the running attempt's token
and lease, result, error, the dead-letter mark), `job_artifacts` (the S3 objects of a job),
the outbox and `processed_events`. A trigger NOTIFYs `worker_jobs` with the job id on every
update (WatchJob listens).

Functions take an asyncpg connection; writers run in the caller's transaction and never commit.
Every write an attempt makes (progress, heartbeat, artifact, outcome) is fenced by its token:
`WHERE id = $1 AND attempt_token = $2`, so an attempt whose lease ran out, and whose job was
taken up again, writes nothing. Paging is keyset on (created_at, id) newest first (dead jobs:
(finished_at, id)); the cursor is that pair, opaque to callers.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aether_common.errors import ValidationFailed
from aether_worker.records import ACTIVE, Artifact, Job, Page, Status

Conn = Any  # an asyncpg connection

CHANNEL = "worker_jobs"

_COLUMNS = (
    "id, type, params, owner_id, submitted_by, priority, status, progress, progress_message,"
    " attempts, max_attempts, cancel_requested, result, error_code, error_message, dead,"
    " retry_at, created_at, started_at, finished_at, updated_at, expires_at, idempotency_key"
)
_FINAL_SQL = "('completed', 'failed', 'cancelled')"


def _job(row: Any, artifacts: Sequence[Artifact] = ()) -> Job:
    return Job(
        id=row["id"],
        type=row["type"],
        params=row["params"],
        owner_id=row["owner_id"],
        submitted_by=row["submitted_by"],
        priority=row["priority"],
        status=Status(row["status"]),
        progress=row["progress"],
        progress_message=row["progress_message"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        cancel_requested=row["cancel_requested"],
        result=row["result"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        dead=row["dead"],
        retry_at=row["retry_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        idempotency_key=row["idempotency_key"],
        artifacts=tuple(artifacts),
    )


def parse_id(value: str) -> uuid.UUID | None:
    """A uuid, or None for anything else (an unknown id is NOT_FOUND, not a bad request)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# -- cursors ---------------------------------------------------------------------------------------
def _cursor(time: datetime, id_: uuid.UUID) -> str:
    raw = f"{time.timestamp():.6f}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, id_ = raw.split("|", 1)
        return datetime.fromtimestamp(float(stamp), UTC), uuid.UUID(id_)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            "cursor: not a cursor this list gave", field_errors={"cursor": "invalid"}
        ) from exc


# -- submitting ------------------------------------------------------------------------------------
async def lock_owner(conn: Conn, owner_id: str) -> None:
    """Serialises one owner's submissions (the quota count and the idempotency key)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('worker.owner:' || $1))", owner_id)


async def count_active(conn: Conn, owner_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE owner_id = $1 AND status = ANY($2::text[])",
        owner_id,
        list(ACTIVE),
    )
    return count


async def job_by_key(conn: Conn, owner_id: str, key: str) -> Job | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = $1 AND idempotency_key = $2",  # noqa: S608
        owner_id,
        key,
    )
    return None if row is None else (await _with_artifacts(conn, [row]))[0]


async def insert_job(
    conn: Conn,
    *,
    type_: str,
    params: dict[str, Any],
    owner_id: str,
    submitted_by: str,
    priority: int,
    max_attempts: int,
    idempotency_key: str,
) -> Job:
    """A queued job whose work message the caller writes in the same transaction."""
    row = await conn.fetchrow(
        f"""INSERT INTO jobs (id, type, params, owner_id, submitted_by, priority, status,
                              max_attempts, idempotency_key, enqueued_at)
            VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, now())
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        uuid.uuid4(),
        type_,
        params,
        owner_id,
        submitted_by,
        priority,
        max_attempts,
        idempotency_key,
    )
    return _job(row)


# -- reading ---------------------------------------------------------------------------------------
async def get_job(conn: Conn, job_id: uuid.UUID, *, lock: bool = False) -> Job | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"  # noqa: S608 (constants)
        + (" FOR UPDATE" if lock else ""),
        job_id,
    )
    return None if row is None else (await _with_artifacts(conn, [row]))[0]


async def _with_artifacts(conn: Conn, rows: Sequence[Any]) -> list[Job]:
    if not rows:
        return []
    found = await conn.fetch(
        """SELECT job_id, name, content_type, size, s3_key FROM job_artifacts
           WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, name""",
        [row["id"] for row in rows],
    )
    by_job: dict[uuid.UUID, list[Artifact]] = {}
    for a in found:
        by_job.setdefault(a["job_id"], []).append(
            Artifact(a["name"], a["content_type"], a["size"], a["s3_key"])
        )
    return [_job(row, by_job.get(row["id"], ())) for row in rows]


async def list_jobs(
    conn: Conn, owner_id: str, *, status: str, type_: str, limit: int, cursor: str
) -> Page[Job]:
    after = _parse_cursor(cursor)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM jobs
            WHERE owner_id = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR type = $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
            ORDER BY created_at DESC, id DESC LIMIT $6""",  # noqa: S608 (constants)
        owner_id,
        status,
        type_,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    jobs = await _with_artifacts(conn, rows[:limit])
    more = len(rows) > limit
    return Page(jobs, _cursor(jobs[-1].created_at, jobs[-1].id) if more else "")


async def list_dead(conn: Conn, *, type_: str, limit: int, cursor: str) -> Page[Job]:
    after = _parse_cursor(cursor)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM jobs
            WHERE dead AND ($1 = '' OR type = $1)
              AND ($2::timestamptz IS NULL OR (finished_at, id) < ($2, $3))
            ORDER BY finished_at DESC, id DESC LIMIT $4""",  # noqa: S608 (constants)
        type_,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    jobs = await _with_artifacts(conn, rows[:limit])
    more = len(rows) > limit
    last = jobs[-1] if jobs else None
    next_cursor = _cursor(last.finished_at, last.id) if more and last and last.finished_at else ""
    return Page(jobs, next_cursor)


# -- an attempt: claim, heartbeat, progress, outcome (fenced by the attempt token) -------------
async def claim(
    conn: Conn, job_id: uuid.UUID, token: uuid.UUID, *, worker: str, lease_s: float
) -> Job | None:
    """The queued job, now running under `token`; None when it is not claimable (running
    elsewhere, finished, cancelled, or its retry not yet due: a duplicate or stale message)."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = 'running', attempts = attempts + 1, attempt_token = $2,
                   lease_until = now() + $3::interval, worker = $4,
                   started_at = coalesce(started_at, now()), retry_at = NULL,
                   progress = 0, progress_message = '', updated_at = now()
            WHERE id = $1 AND status = 'queued' AND NOT cancel_requested
              AND (retry_at IS NULL OR retry_at <= now())
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        job_id,
        token,
        timedelta(seconds=lease_s),
        worker,
    )
    return None if row is None else _job(row)


async def heartbeat(conn: Conn, job_id: uuid.UUID, token: uuid.UUID, lease_s: float) -> bool | None:
    """Renews the lease; returns whether cancellation was asked for, None if the attempt lost
    the job (its lease ran out and the job moved on)."""
    value: bool | None = await conn.fetchval(
        """UPDATE jobs SET lease_until = now() + $3::interval
           WHERE id = $1 AND attempt_token = $2 RETURNING cancel_requested""",
        job_id,
        token,
        timedelta(seconds=lease_s),
    )
    return value


async def progress(
    conn: Conn, job_id: uuid.UUID, token: uuid.UUID, percent: int, message: str
) -> bool | None:
    """Records progress; like `heartbeat`, the cancellation flag or None."""
    value: bool | None = await conn.fetchval(
        """UPDATE jobs SET progress = $3, progress_message = $4, updated_at = now()
           WHERE id = $1 AND attempt_token = $2 RETURNING cancel_requested""",
        job_id,
        token,
        percent,
        message,
    )
    return value


async def cancel_flag(conn: Conn, job_id: uuid.UUID, token: uuid.UUID) -> bool | None:
    value: bool | None = await conn.fetchval(
        "SELECT cancel_requested FROM jobs WHERE id = $1 AND attempt_token = $2", job_id, token
    )
    return value


async def put_artifact(
    conn: Conn, job_id: uuid.UUID, token: uuid.UUID, artifact: Artifact
) -> tuple[bool, str | None]:
    """Records a stored object, replacing one of the same name: (recorded, the replaced
    object's key, to delete). Not recorded when the attempt is fenced off."""
    row = await conn.fetchrow(
        """WITH old AS (SELECT s3_key FROM job_artifacts WHERE job_id = $1 AND name = $3),
                put AS (
                    INSERT INTO job_artifacts (job_id, name, content_type, size, s3_key)
                    SELECT id, $3, $4, $5, $6 FROM jobs WHERE id = $1 AND attempt_token = $2
                    ON CONFLICT (job_id, name) DO UPDATE SET
                        content_type = EXCLUDED.content_type, size = EXCLUDED.size,
                        s3_key = EXCLUDED.s3_key, created_at = now()
                    RETURNING 1)
           SELECT (SELECT count(*) FROM put) AS recorded, (SELECT s3_key FROM old) AS old_key""",
        job_id,
        token,
        artifact.name,
        artifact.content_type,
        artifact.size,
        artifact.s3_key,
    )
    return bool(row["recorded"]), row["old_key"]


async def settle(
    conn: Conn,
    job_id: uuid.UUID,
    token: uuid.UUID,
    *,
    status: Status,
    retention_s: float,
    result: dict[str, Any] | None = None,
    error: tuple[str, str] = ("", ""),
    dead: bool = False,
    retry_in_s: float | None = None,
) -> Job | None:
    """The attempt's outcome: a final status, or queued again (a retry due in `retry_in_s`).
    None when the attempt no longer holds the job."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = $3, result = $4, error_code = $5, error_message = $6,
                   dead = $7, retry_at = now() + $8::interval,
                   progress = CASE WHEN $3 = 'completed' THEN 100 ELSE progress END,
                   attempt_token = NULL, lease_until = NULL, worker = '', enqueued_at = NULL,
                   finished_at = CASE WHEN $3 IN {_FINAL_SQL} THEN now() END,
                   expires_at = CASE WHEN $3 IN {_FINAL_SQL} THEN now() + $9::interval END,
                   updated_at = now()
            WHERE id = $1 AND attempt_token = $2 AND status = 'running'
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        job_id,
        token,
        status.value,
        result,
        error[0],
        error[1],
        dead,
        None if retry_in_s is None else timedelta(seconds=retry_in_s),
        timedelta(seconds=retention_s),
    )
    return None if row is None else _job(row)


async def release(conn: Conn, job_id: uuid.UUID, token: uuid.UUID) -> Job | None:
    """A running attempt handed back unfinished (its worker is stopping): queued again, the
    attempt not counted; its work message is the caller's."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0),
                   attempt_token = NULL, lease_until = NULL, worker = '', retry_at = NULL,
                   enqueued_at = now(), progress = 0, progress_message = '', updated_at = now()
            WHERE id = $1 AND attempt_token = $2 AND status = 'running'
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        job_id,
        token,
    )
    return None if row is None else _job(row)


# -- cancelling and replaying ----------------------------------------------------------------------
async def cancel_queued(conn: Conn, job_id: uuid.UUID, *, retention_s: float) -> Job | None:
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = 'cancelled', cancel_requested = true,
                   error_code = 'cancelled', error_message = 'cancelled before it ran',
                   retry_at = NULL, enqueued_at = NULL, finished_at = now(),
                   expires_at = now() + $2::interval, updated_at = now()
            WHERE id = $1 AND status = 'queued'
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        job_id,
        timedelta(seconds=retention_s),
    )
    return None if row is None else _job(row)


async def request_cancel(conn: Conn, job_id: uuid.UUID) -> Job | None:
    row = await conn.fetchrow(
        f"""UPDATE jobs SET cancel_requested = true, updated_at = now()
            WHERE id = $1 AND status = 'running'
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        job_id,
    )
    return None if row is None else _job(row)


async def replay(conn: Conn, job_id: uuid.UUID) -> Job | None:
    """A dead job queued again with a fresh attempt budget (its work message: the caller's)."""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET status = 'queued', dead = false, attempts = 0, progress = 0,
                   progress_message = '', result = NULL, error_code = '', error_message = '',
                   cancel_requested = false, retry_at = NULL, enqueued_at = now(),
                   finished_at = NULL, expires_at = NULL, updated_at = now()
            WHERE id = $1 AND dead
            RETURNING {_COLUMNS}""",  # noqa: S608 (constants)
        job_id,
    )
    return None if row is None else _job(row)


# -- the scheduler ---------------------------------------------------------------------------------
async def expired_leases(conn: Conn, limit: int) -> list[tuple[Job, uuid.UUID]]:
    """Running jobs whose lease ran out (their worker died or hangs), locked, with the token
    of the attempt that lost them."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS}, attempt_token FROM jobs
            WHERE status = 'running' AND lease_until < now()
            ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED""",  # noqa: S608 (constants)
        limit,
    )
    return [(_job(row), row["attempt_token"]) for row in rows]


async def due_for_dispatch(conn: Conn, *, requeue_after_s: float, limit: int) -> list[Job]:
    """Queued jobs whose work message is to be written now: retries that came due, and jobs
    whose message went unclaimed for `requeue_after_s` (lost with a broker, say). Marks them
    enqueued; higher priority first."""
    rows = await conn.fetch(
        """WITH due AS (
                SELECT id FROM jobs
                WHERE status = 'queued' AND NOT cancel_requested
                  AND ((retry_at IS NOT NULL AND retry_at <= now())
                       OR (retry_at IS NULL AND enqueued_at < now() - $1::interval))
                ORDER BY priority DESC, coalesce(retry_at, enqueued_at)
                LIMIT $2 FOR UPDATE SKIP LOCKED)
            UPDATE jobs SET retry_at = NULL, enqueued_at = now()
            FROM due WHERE jobs.id = due.id
            RETURNING jobs.*""",
        timedelta(seconds=requeue_after_s),
        limit,
    )
    return [_job(row) for row in rows]


# -- retention and erasure -------------------------------------------------------------------------
async def expired_jobs(conn: Conn, limit: int) -> list[tuple[uuid.UUID, list[str]]]:
    """Jobs past their `expires_at`, with their artifacts' S3 keys."""
    rows = await conn.fetch(
        """SELECT j.id, coalesce(array_agg(a.s3_key) FILTER (WHERE a.s3_key IS NOT NULL),
                                 '{}'::text[]) AS keys
           FROM (SELECT id FROM jobs WHERE expires_at < now()
                 ORDER BY expires_at LIMIT $1) j
           LEFT JOIN job_artifacts a ON a.job_id = j.id GROUP BY j.id""",
        limit,
    )
    return [(row["id"], list(row["keys"])) for row in rows]


async def owner_artifact_keys(conn: Conn, owner_id: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT a.s3_key FROM job_artifacts a JOIN jobs j ON j.id = a.job_id
           WHERE j.owner_id = $1""",
        owner_id,
    )
    return [row["s3_key"] for row in rows]


async def delete_expired(conn: Conn, job_ids: Sequence[uuid.UUID]) -> int:
    status: str = await conn.execute(
        "DELETE FROM jobs WHERE id = ANY($1::uuid[]) AND expires_at < now()", list(job_ids)
    )
    return int(status.rsplit(" ", 1)[-1])


async def delete_owner_jobs(conn: Conn, owner_id: str) -> int:
    status: str = await conn.execute("DELETE FROM jobs WHERE owner_id = $1", owner_id)
    return int(status.rsplit(" ", 1)[-1])


# -- gdpr.export (read-only on jobs; its own mail marker) -------------------------------------
async def owner_jobs(conn: Conn, owner_id: str) -> list[Job]:
    """Every job the user owns, oldest first, with its artifacts (the export's worker part)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = $1 ORDER BY created_at, id",  # noqa: S608
        owner_id,
    )
    return await _with_artifacts(conn, rows)


async def mark_export_mail(conn: Conn, job_id: uuid.UUID, to: str) -> bool:
    """Claims the job's one mail in the caller's transaction: False when it was sent already
    (a concurrent claim waits on this row's lock until the first commits or rolls back)."""
    claimed = await conn.fetchval(
        "INSERT INTO export_mails (job_id, sent_to) SELECT $1, $2 "
        "WHERE EXISTS (SELECT FROM jobs WHERE id = $1) "  # an erased job mails no one
        "ON CONFLICT (job_id) DO NOTHING RETURNING true",
        job_id,
        to,
    )
    return bool(claimed)
