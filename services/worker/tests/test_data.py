"""A job's data: artifacts in S3 behind signed URLs; fencing (an attempt that lost its lease
writes nothing); retention (finished jobs and their objects purged after their time); an
account deletion erases the user's jobs and objects."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from aether.auth.v1 import events_pb2 as auth_events
from aether_common.errors import NotFound
from aether_common.events import Event, EventProducer
from aether_devstack.testkit import eventually, failure
from aether_worker import artifacts, consumers, repository
from aether_worker.handler import JobContext, JobType
from aether_worker.records import Status


class Empty(BaseModel):
    pass


async def report(ctx: JobContext, _: Empty) -> dict[str, Any]:
    await ctx.put_artifact("report.txt", f"report of {ctx.job_id}".encode(), "text/plain")
    return {"pages": 1}


REPORT = JobType("test.report", Empty, report, user_may_submit=True)


async def object_keys(worker: Any, job_id: str) -> list[str]:
    async with worker.app.database.connection() as conn:
        rows = await conn.fetch(
            "SELECT s3_key FROM job_artifacts WHERE job_id = $1", uuid.UUID(job_id)
        )
    return [row["s3_key"] for row in rows]


async def test_an_artifact_is_served_by_a_signed_url(start_worker: Any) -> None:
    worker = await start_worker(job_types=[REPORT])
    user = worker.auth(worker.user())
    job = await worker.submit(user, "test.report")

    done = await worker.finished(user, job.id)

    assert done.status == "completed"
    (artifact,) = done.artifacts
    assert (artifact.name, artifact.content_type) == ("report.txt", "text/plain")
    assert artifact.size == len(f"report of {job.id}")
    assert artifact.url_expires_at.seconds > 0
    async with httpx.AsyncClient() as http:
        fetched = await http.get(artifact.url)
    assert fetched.status_code == 200
    assert fetched.content == f"report of {job.id}".encode()


async def test_an_attempt_that_lost_its_lease_writes_nothing(start_worker: Any) -> None:
    """Attempt 1 is claimed, its lease runs out, the scheduler queues the job again and
    attempt 2 claims it: attempt 1's progress, artifact and outcome are all refused."""
    worker = await start_worker(job_types=[REPORT], events=False)
    app = worker.app
    job = await worker.submit(worker.auth(worker.user()), "test.report")
    first = await app.database.transaction(
        lambda uow: app.transitions.claim(uow, uuid.UUID(job.id), worker="w1")
    )
    assert first is not None
    async with app.database.connection() as conn:
        await conn.execute("UPDATE jobs SET lease_until = now() - interval '1 second'")
    await app.scheduler.run_once()
    second = await app.database.transaction(
        lambda uow: app.transitions.claim(uow, uuid.UUID(job.id), worker="w2")
    )
    assert second is not None
    assert second.job.attempts == 2

    async with app.database.connection() as conn:
        assert await repository.progress(conn, first.job.id, first.token, 50, "") is None
        assert await repository.heartbeat(conn, first.job.id, first.token, 10) is None
    late = await app.database.transaction(
        lambda uow: app.transitions.complete(uow, first, {"from": "attempt 1"})
    )
    assert late is None
    done = await app.database.transaction(
        lambda uow: app.transitions.complete(uow, second, {"from": "attempt 2"})
    )
    assert done is not None
    assert (done.status, done.result) == (Status.COMPLETED, {"from": "attempt 2"})


async def test_retention_purges_finished_jobs_and_their_objects(start_worker: Any) -> None:
    # About 0.9 s of retention.
    worker = await start_worker(job_types=[REPORT], retention_days=0.00001)
    user = worker.auth(worker.user())
    job = await worker.submit(user, "test.report")
    await worker.finished(user, job.id)
    (key,) = await object_keys(worker, job.id)
    assert await worker.app.bucket.exists(key)

    async def purged() -> bool:
        return bool(await worker.app.retention.run_once())

    await eventually(purged, within=10, what="the job purged")

    assert isinstance(await failure(worker.get(user, job.id)), NotFound)
    assert not await worker.app.bucket.exists(key)


async def test_a_deleted_account_has_its_jobs_and_objects_erased(
    start_worker: Any, topic_prefix: str
) -> None:
    worker = await start_worker(job_types=[REPORT])
    ada, bob = worker.user("ada"), worker.user("bob")
    adas = await worker.submit(worker.auth(ada), "test.report")
    bobs = await worker.submit(worker.auth(bob), "test.report")
    await worker.finished(worker.auth(ada), adas.id)
    await worker.finished(worker.auth(bob), bobs.id)
    (adas_key,) = await object_keys(worker, adas.id)

    producer = EventProducer(worker.app.settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        deleted = Event(
            type=topic_prefix + consumers.USER_DELETED,
            subject=ada,
            payload=auth_events.UserDeleted(user_id=ada),
            source="auth",
        )
        await producer.publish(deleted)
        await producer.publish(deleted)  # redelivered: the same event id
    finally:
        await producer.stop()

    async def erased() -> bool:
        return not await object_keys(worker, adas.id) and not await worker.app.bucket.exists(
            adas_key
        )

    await eventually(erased, within=30, what="ada's jobs erased")
    assert isinstance(await failure(worker.get(worker.auth(ada), adas.id)), NotFound)
    assert (await worker.get(worker.auth(bob), bobs.id)).status == "completed"


@pytest.mark.parametrize("name", ["../x", "", "a/b", "x" * 101])
def test_artifact_names_are_plain(name: str) -> None:
    with pytest.raises(ValueError, match="artifact name"):
        artifacts.key(uuid.uuid4(), uuid.uuid4(), name)
