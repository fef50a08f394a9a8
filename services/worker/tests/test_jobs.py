"""Submitting, reading, listing: a job runs to `completed` with its result; what a caller may
submit; params checked per type (the bad field named); quotas per plan; the idempotency key."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field

from aether.worker.v1 import worker_pb2
from aether_common.errors import Forbidden, NotFound, RateLimited, ValidationFailed
from aether_devstack.testkit import failure
from aether_worker.handler import JobContext, JobType
from aether_worker.noop import NOOP


class SweepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=12)
    windows: list[int] = Field(min_length=1)


async def sweep(ctx: JobContext, params: SweepParams) -> dict[str, Any]:
    for done, window in enumerate(params.windows, 1):
        await ctx.progress(100 * done // len(params.windows), f"window {window}")
    return {"symbol": params.symbol, "runs": len(params.windows)}


# A user type whose size is its number of windows (what the sweep quota counts).
SWEEP = JobType(
    name="test.sweep",
    params=SweepParams,
    run=sweep,
    user_may_submit=True,
    runs=lambda p: len(p.windows),
)


@pytest.fixture
async def worker(start_worker: Any) -> Any:
    return await start_worker(job_types=[NOOP, SWEEP])


async def test_a_submitted_job_runs_to_completed_with_its_result(worker: Any) -> None:
    user = worker.user()
    job = await worker.submit(
        worker.auth(user), "test.sweep", {"symbol": "GOOG", "windows": [5, 10]}
    )
    assert job.status == "queued"
    assert job.owner_id == user
    assert orjson.loads(job.params_json) == {"symbol": "GOOG", "windows": [5, 10]}
    assert job.max_attempts == 3

    done = await worker.finished(worker.auth(user), job.id)

    assert done.status == "completed"
    assert orjson.loads(done.result_json) == {"symbol": "GOOG", "runs": 2}
    assert done.progress == 100
    assert done.attempts == 1
    assert not done.HasField("error")
    assert done.finished_at.ToDatetime() >= done.started_at.ToDatetime()
    assert done.HasField("expires_at")
    assert await worker.statuses(job.id) == [
        ("", "queued"),
        ("queued", "running"),
        ("running", "completed"),
    ]


async def test_an_operator_runs_noop(worker: Any) -> None:
    admin = worker.admin(worker.user("admin"))
    job = await worker.submit(admin, "noop", {"sleep_ms": 300})

    done = await worker.finished(admin, job.id)

    assert done.status == "completed"
    assert orjson.loads(done.result_json)["slept_ms"] == 300


async def test_a_user_may_not_submit_an_operator_type(worker: Any) -> None:
    error = await failure(worker.submit(worker.auth(worker.user()), "noop", {}))
    assert isinstance(error, Forbidden)
    assert error.error_code == "job_type_not_allowed"


async def test_only_a_service_may_submit_on_behalf_of_a_user(worker: Any) -> None:
    user = worker.user()
    error = await failure(
        worker.submit(worker.admin(worker.user("admin")), "noop", {}, on_behalf_of=user)
    )
    assert isinstance(error, Forbidden)

    job = await worker.submit(
        worker.service_auth("ai"), "test.sweep", {"symbol": "A", "windows": [1]}, on_behalf_of=user
    )
    assert job.owner_id == user
    # The user sees it as theirs.
    assert (await worker.get(worker.auth(user), job.id)).id == job.id


@pytest.mark.parametrize(
    ("type_", "params_json", "field"),
    [
        ("nope", "{}", "type"),
        ("test.sweep", "{not json", "params_json"),
        ("test.sweep", "[1, 2]", "params_json"),
        ("test.sweep", '{"symbol": "GOOG"}', "params.windows"),
        ("test.sweep", '{"symbol": "", "windows": [1]}', "params.symbol"),
        ("test.sweep", '{"symbol": "A", "windows": [1], "x": 1}', "params.x"),
    ],
)
async def test_bad_input_names_the_field(
    worker: Any, type_: str, params_json: str, field: str
) -> None:
    request = worker_pb2.SubmitJobRequest(type=type_, params_json=params_json)
    error = await failure(worker.stub.SubmitJob(request, metadata=worker.auth(worker.user())))

    assert isinstance(error, ValidationFailed)
    assert field in error.field_errors


async def test_priority_and_key_limits_name_their_field(worker: Any) -> None:
    user = worker.auth(worker.user())
    params = {"symbol": "A", "windows": [1]}
    error = await failure(worker.submit(user, "test.sweep", params, priority=1000))
    assert isinstance(error, ValidationFailed)
    assert set(error.field_errors) == {"priority"}
    error = await failure(worker.submit(user, "test.sweep", params, idempotency_key="k" * 201))
    assert isinstance(error, ValidationFailed)
    assert set(error.field_errors) == {"idempotency_key"}


async def test_another_users_job_is_not_found(worker: Any) -> None:
    owner = worker.auth(worker.user())
    job = await worker.submit(owner, "test.sweep", {"symbol": "A", "windows": [1]})

    error = await failure(worker.get(worker.auth(worker.user()), job.id))
    assert isinstance(error, NotFound)
    error = await failure(worker.get(owner, "not-a-uuid"))
    assert isinstance(error, NotFound)
    # Operators read any job.
    assert (await worker.get(worker.admin(worker.user("admin")), job.id)).id == job.id


async def test_no_token_is_unauthenticated(worker: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await worker.stub.GetJob(worker_pb2.GetJobRequest(id="x"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_sweep_quota_depends_on_the_plan(worker: Any) -> None:
    """free: 25 runs per job, premium: 500 (config.py defaults, docs/worker.md)."""
    big = {"symbol": "A", "windows": list(range(1, 27))}
    error = await failure(worker.submit(worker.auth(worker.user()), "test.sweep", big))
    assert isinstance(error, RateLimited)
    assert error.error_code == "sweep_quota_exceeded"
    assert error.metadata["limit"] == "25"

    premium = worker.auth(worker.user(), plan="premium")
    assert (await worker.submit(premium, "test.sweep", big)).status == "queued"


async def test_the_concurrent_jobs_quota_counts_queued_and_running(start_worker: Any) -> None:
    """Jobs not run (no Kafka) stay queued: the free plan's 3 fill the quota."""
    worker = await start_worker(job_types=[SWEEP], events=False)
    user = worker.user()
    params = {"symbol": "A", "windows": [1]}
    jobs = [await worker.submit(worker.auth(user), "test.sweep", params) for _ in range(3)]

    error = await failure(worker.submit(worker.auth(user), "test.sweep", params))
    assert isinstance(error, RateLimited)
    assert error.error_code == "concurrent_jobs_quota_exceeded"
    assert error.metadata == {"limit": "3", "active": "3", "plan": "free"}

    # A cancelled job frees its place; other users have their own quota.
    await worker.stub.CancelJob(
        worker_pb2.CancelJobRequest(id=jobs[0].id), metadata=worker.auth(user)
    )
    assert (await worker.submit(worker.auth(user), "test.sweep", params)).status == "queued"
    assert (
        await worker.submit(worker.auth(worker.user()), "test.sweep", params)
    ).status == "queued"


async def test_the_idempotency_key_answers_the_first_job(start_worker: Any) -> None:
    worker = await start_worker(job_types=[SWEEP], events=False)
    user = worker.user()
    params = {"symbol": "A", "windows": [1]}
    request = worker_pb2.SubmitJobRequest(
        type="test.sweep", params_json=orjson.dumps(params).decode(), idempotency_key="order-1"
    )

    answers = await asyncio.gather(
        *(worker.stub.SubmitJob(request, metadata=worker.auth(user)) for _ in range(4))
    )

    assert len({a.job.id for a in answers}) == 1
    assert sorted(a.created for a in answers) == [False, False, False, True]
    # Another owner's same key is another job.
    other = await worker.stub.SubmitJob(request, metadata=worker.auth(worker.user()))
    assert other.created
    assert other.job.id != answers[0].job.id


async def test_list_is_mine_newest_first_with_filters_and_paging(start_worker: Any) -> None:
    worker = await start_worker(job_types=[SWEEP], events=False, concurrent_free=10)
    user = worker.auth(worker.user())
    ids = [
        (await worker.submit(user, "test.sweep", {"symbol": "A", "windows": [1]})).id
        for _ in range(5)
    ]
    await worker.submit(worker.auth(worker.user()), "test.sweep", {"symbol": "B", "windows": [1]})
    await worker.stub.CancelJob(worker_pb2.CancelJobRequest(id=ids[0]), metadata=user)

    seen: list[str] = []
    cursor = ""
    while True:
        page = await worker.stub.ListJobs(
            worker_pb2.ListJobsRequest(limit=2, cursor=cursor), metadata=user
        )
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == ids[::-1]

    cancelled = await worker.stub.ListJobs(
        worker_pb2.ListJobsRequest(status="cancelled"), metadata=user
    )
    assert [j.id for j in cancelled.jobs] == [ids[0]]
    error = await failure(
        worker.stub.ListJobs(worker_pb2.ListJobsRequest(status="done"), metadata=user)
    )
    assert isinstance(error, ValidationFailed)
    assert set(error.field_errors) == {"status"}
