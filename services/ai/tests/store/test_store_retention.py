"""Retention: old request rows and old finished jobs go; recent ones, running jobs and the
daily aggregates stay."""

from __future__ import annotations

from datetime import timedelta

from aether.ai.v1 import ai_pb2
from aether_ai.jobs import Jobs
from aether_ai.retention import RetentionJob
from aether_ai.usage import UsageStore
from aether_common.postgres import PostgresDatabase

from .test_store_usage import completion


async def test_rows_past_retention_are_deleted(store_db: PostgresDatabase) -> None:
    usage = UsageStore(store_db)
    old, recent = completion("u1"), completion("u1")
    for item in (old, recent):
        await usage.record(item)
    await store_db.pool.execute(
        "UPDATE ai_requests SET created_at = now() - interval '31 days' WHERE request_id = $1",
        old.request_id,
    )
    jobs = Jobs(store_db)
    ids = [(await jobs.submit("u1", ai_pb2.ChatRequest(message=f"q{n}"))).job_id for n in range(4)]
    # Finished 8 days ago, finished yesterday, failed 8 days ago, still queued (made 8 days ago).
    await store_db.pool.execute(
        """
        UPDATE ai_jobs SET
            status = (ARRAY['succeeded', 'succeeded', 'failed', 'queued'])[n],
            finished_at = CASE WHEN n = 4 THEN NULL
                ELSE now() - (ARRAY[interval '8 days', interval '1 day', interval '8 days'])[n]
            END,
            created_at = now() - interval '8 days'
        FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)
        WHERE ai_jobs.id = t.id
        """,
        ids,
    )
    job = RetentionJob(
        store_db,
        interval_s=3600,
        request_log=timedelta(days=30),
        finished_jobs=timedelta(days=7),
    )

    assert await job.run_once() == {"requests": 1, "jobs": 2}

    kept = [r["request_id"] for r in await store_db.pool.fetch("SELECT * FROM ai_requests")]
    assert kept == [recent.request_id]
    left = {str(r["id"]) for r in await store_db.pool.fetch("SELECT id FROM ai_jobs")}
    assert left == {ids[1], ids[3]}
    daily = await store_db.pool.fetchval("SELECT sum(requests) FROM ai_usage_daily")
    assert daily == 2  # the aggregate still counts the deleted row's request
    assert await job.run_once() == {"requests": 0, "jobs": 0}
