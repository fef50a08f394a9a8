"""/api/jobs/*: each route calls its WorkerService RPC with the caller's token and shapes the
job; bad input is a 400 naming the field before any call; the worker's refusals keep their
meaning (400 naming the field, 403, 404 for another user's job, 429 for the quota), a finished
job's cancel is a 409, the worker away is a 503 with Retry-After, and the admin routes refuse a
non-admin at the gateway. The worker is a scripted peer holding jobs in a dict (FakeWorker in
conftest.py); the lead's integration suite runs the same routes against the real worker."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether.worker.v1 import worker_pb2
from aether_common import errors


def ts(second: int) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime(2025, 1, 2, 3, 4, second, 500_000, tzinfo=UTC))
    return value


@pytest.fixture
async def api(start_gateway: Any, fake_worker: Any) -> Any:
    return await start_gateway(worker_grpc_target=fake_worker.address)


@pytest.fixture
def ada(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


@pytest.fixture
def bob(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-bob')}"}


@pytest.fixture
def admin(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-root', plan='admin', roles=['admin'])}"}


def closed_port_target() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


# -- submit --------------------------------------------------------------------------------------
async def test_a_job_is_submitted_with_the_callers_token_202_and_its_location(
    api: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    body = {
        "type": "backtest",
        "params": {"symbol": "GOOG", "strategy": "sma_cross", "fast": 10, "slow": 30},
        "priority": 5,
        "idempotency_key": "bt-1",
    }
    response = await api.post("/api/jobs", json=body, headers=ada)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/jobs/{job['id']}"
    (call,) = fake_worker.calls_to("SubmitJob")
    assert call.metadata["authorization"] == ada["Authorization"]
    assert call.request.type == "backtest"
    assert json.loads(call.request.params_json) == body["params"]
    assert (call.request.priority, call.request.idempotency_key) == (5, "bt-1")
    stored = fake_worker.jobs[job["id"]]
    assert job == {
        "id": stored.id,
        "type": "backtest",
        "params": body["params"],
        "owner_id": "u-ada",
        "priority": 5,
        "status": "queued",
        "progress": 0,
        "progress_message": "",
        "attempts": 0,
        "max_attempts": 3,
        "result": None,
        "artifacts": [],
        "error": None,
        "cancel_requested": False,
        "retry_at": None,
        "created_at": job["created_at"],
        "started_at": None,
        "finished_at": None,
        "updated_at": job["updated_at"],
        "expires_at": None,
    }
    assert job["created_at"].endswith("Z")


async def test_the_same_idempotency_key_answers_the_first_job_with_200(
    api: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    body = {"type": "noop", "idempotency_key": "k-1"}
    first = await api.post("/api/jobs", json=body, headers=ada)
    again = await api.post("/api/jobs", json=body, headers=ada)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert len(fake_worker.jobs) == 1
    # Without a key, params default to {} and each submit is a new job.
    other = await api.post("/api/jobs", json={"type": "noop"}, headers=ada)
    assert other.status_code == 202
    assert json.loads(fake_worker.calls_to("SubmitJob")[-1].request.params_json) == {}
    assert len(fake_worker.jobs) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "field"),
    [
        ("post", "/api/jobs", {"params": {}}, None, "type"),
        ("post", "/api/jobs", {"type": "Back Test"}, None, "type"),
        ("post", "/api/jobs", {"type": "noop", "params": [1, 2]}, None, "params"),
        ("post", "/api/jobs", {"type": "noop", "priority": "high"}, None, "priority"),
        ("post", "/api/jobs", {"type": "noop", "priority": 2**31}, None, "priority"),
        ("post", "/api/jobs", {"type": "noop", "idempotency_key": ""}, None, "idempotency_key"),
        (
            "post",
            "/api/jobs",
            {"type": "noop", "idempotency_key": "k" * 201},
            None,
            "idempotency_key",
        ),
        ("post", "/api/jobs", {"type": "noop", "owner_id": "u-bob"}, None, "owner_id"),
        ("get", "/api/jobs", None, {"status": "done"}, "status"),
        ("get", "/api/jobs", None, {"type": "NOT A TYPE"}, "type"),
        ("get", "/api/jobs", None, {"limit": 0}, "limit"),
        ("get", "/api/jobs", None, {"limit": 201}, "limit"),
        ("get", "/api/jobs/not%20an%20id", None, None, "job_id"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field_before_any_call(
    api: Any,
    fake_worker: Any,
    ada: dict[str, str],
    error_shape: Any,
    method: str,
    path: str,
    body: Any,
    params: Any,
    field: str,
) -> None:
    response = await api.request(method.upper(), path, json=body, params=params, headers=ada)
    assert field in error_shape(response, 400, "validation")
    assert not fake_worker.calls


async def test_the_workers_refusals_keep_their_meaning(
    api: Any, fake_worker: Any, ada: dict[str, str], error_shape: Any
) -> None:
    # INVALID_ARGUMENT naming the field -> 400 naming it.
    bad = await api.post("/api/jobs", json={"type": "backtest", "params": {}}, headers=ada)
    assert "params.symbol" in error_shape(bad, 400, "validation")
    unknown = await api.post("/api/jobs", json={"type": "no.such_type"}, headers=ada)
    assert "type" in error_shape(unknown, 400, "validation")
    # A field named only in the BadRequest details still reaches the client.
    fake_worker.answers["SubmitJob"] = errors.ValidationFailed(
        "invalid parameters", field_errors={"params.fast": "must be below slow"}
    )
    vague = await api.post("/api/jobs", json={"type": "backtest"}, headers=ada)
    assert error_shape(vague, 400) == "invalid parameters (params.fast: must be below slow)"
    del fake_worker.answers["SubmitJob"]
    # PERMISSION_DENIED (an operators' type) -> 403.
    refused = await api.post("/api/jobs", json={"type": "memory.reindex"}, headers=ada)
    error_shape(refused, 403, "job_type_refused")
    # RESOURCE_EXHAUSTED (the plan's quota) -> 429, as alerts' rule quota.
    fake_worker.quota = 1
    assert (await api.post("/api/jobs", json={"type": "noop"}, headers=ada)).status_code == 202
    over = await api.post("/api/jobs", json={"type": "noop"}, headers=ada)
    assert "quota" in error_shape(over, 429, "job_quota_exceeded")
    assert len(fake_worker.jobs) == 1


# -- read ----------------------------------------------------------------------------------------
async def test_a_job_reads_with_its_result_artifacts_and_error(
    api: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    job = fake_worker.add("u-ada", "backtest", params_json='{"symbol": "GOOG"}')
    await fake_worker.update(
        job.id,
        status="completed",
        progress=100,
        progress_message="done",
        attempts=2,
        result_json='{"return_pct": 12.5, "trades": 7}',
        artifacts=[
            worker_pb2.Artifact(
                name="equity.png",
                content_type="image/png",
                size=2048,
                url="http://s3.test/equity.png?sig=x",
                url_expires_at=ts(8),
            )
        ],
        started_at=ts(1),
        expires_at=ts(9),
    )
    response = await api.get(f"/api/jobs/{job.id}", headers=ada)
    assert response.status_code == 200, response.text
    body = response.json()
    assert fake_worker.calls_to("GetJob")[0].request.id == job.id
    assert fake_worker.calls_to("GetJob")[0].metadata["authorization"] == ada["Authorization"]
    assert {k: body[k] for k in ("status", "progress", "progress_message", "attempts")} == {
        "status": "completed",
        "progress": 100,
        "progress_message": "done",
        "attempts": 2,
    }
    assert body["params"] == {"symbol": "GOOG"}
    assert body["result"] == {"return_pct": 12.5, "trades": 7}
    assert body["artifacts"] == [
        {
            "name": "equity.png",
            "content_type": "image/png",
            "size": 2048,
            "url": "http://s3.test/equity.png?sig=x",
            "url_expires_at": "2025-01-02T03:04:08.500000Z",
        }
    ]
    assert body["started_at"] == "2025-01-02T03:04:01.500000Z"
    assert body["expires_at"] == "2025-01-02T03:04:09.500000Z"
    assert body["finished_at"] is not None
    assert body["error"] is None

    failed = fake_worker.add("u-ada", "noop")
    await fake_worker.update(
        failed.id,
        status="failed",
        error=worker_pb2.JobError(code="handler_error", message="boom"),
        retry_at=ts(3),
    )
    body = (await api.get(f"/api/jobs/{failed.id}", headers=ada)).json()
    assert (body["status"], body["error"], body["result"]) == (
        "failed",
        {"code": "handler_error", "message": "boom"},
        None,
    )
    assert body["retry_at"] == "2025-01-02T03:04:03.500000Z"


async def test_another_users_job_is_a_404(
    api: Any, fake_worker: Any, ada: dict[str, str], bob: dict[str, str], error_shape: Any
) -> None:
    job = fake_worker.add("u-ada", "noop")
    assert (await api.get(f"/api/jobs/{job.id}", headers=ada)).status_code == 200
    error_shape(await api.get(f"/api/jobs/{job.id}", headers=bob), 404, "job_not_found")
    error_shape(await api.delete(f"/api/jobs/{job.id}", headers=bob), 404, "job_not_found")
    error_shape(await api.get(f"/api/jobs/{job.id}/events", headers=bob), 404, "job_not_found")
    assert fake_worker.jobs[job.id].status == "queued"


async def test_a_result_that_is_not_json_is_a_502(
    api: Any, fake_worker: Any, ada: dict[str, str], error_shape: Any
) -> None:
    job = fake_worker.add("u-ada", "noop")
    await fake_worker.update(job.id, status="completed", result_json="{not json")
    assert "result" in error_shape(await api.get(f"/api/jobs/{job.id}", headers=ada), 502)


async def test_my_jobs_are_listed_newest_first_filtered_and_paged(
    api: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    older = fake_worker.add("u-ada", "noop")
    backtest = fake_worker.add("u-ada", "backtest", params_json='{"symbol": "GOOG"}')
    fake_worker.add("u-bob", "noop")
    newest = fake_worker.add("u-ada", "noop")
    await fake_worker.update(newest.id, status="running")

    mine = (await api.get("/api/jobs", headers=ada)).json()
    assert [j["id"] for j in mine["jobs"]] == [newest.id, backtest.id, older.id]
    assert mine["next_cursor"] is None

    page = (await api.get("/api/jobs", params={"limit": 2}, headers=ada)).json()
    assert [j["id"] for j in page["jobs"]] == [newest.id, backtest.id]
    rest = await api.get(
        "/api/jobs", params={"limit": 2, "cursor": page["next_cursor"]}, headers=ada
    )
    assert [j["id"] for j in rest.json()["jobs"]] == [older.id]
    assert rest.json()["next_cursor"] is None

    running = (await api.get("/api/jobs", params={"status": "running"}, headers=ada)).json()
    assert [j["id"] for j in running["jobs"]] == [newest.id]
    typed = (await api.get("/api/jobs", params={"type": "backtest"}, headers=ada)).json()
    assert [j["id"] for j in typed["jobs"]] == [backtest.id]
    requests = [c.request for c in fake_worker.calls_to("ListJobs")]
    assert (requests[0].limit, requests[0].status, requests[0].type) == (50, "", "")
    assert (requests[-2].status, requests[-1].type) == ("running", "backtest")


# -- cancel --------------------------------------------------------------------------------------
async def test_cancel_stops_a_queued_job_flags_a_running_one_and_409s_a_finished_one(
    api: Any, fake_worker: Any, ada: dict[str, str], error_shape: Any
) -> None:
    queued = fake_worker.add("u-ada", "noop")
    response = await api.delete(f"/api/jobs/{queued.id}", headers=ada)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"] == {"code": "cancelled", "message": ""}

    running = fake_worker.add("u-ada", "backtest")
    await fake_worker.update(running.id, status="running", progress=40)
    response = await api.delete(f"/api/jobs/{running.id}", headers=ada)
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)

    # FAILED_PRECONDITION from the worker: a 409 here (the job's state is in the way).
    detail = error_shape(await api.delete(f"/api/jobs/{queued.id}", headers=ada), 409)
    assert "already cancelled" in detail
    body = (await api.delete(f"/api/jobs/{queued.id}", headers=ada)).json()
    assert body["error"] == "job_finished"


# -- the worker away -----------------------------------------------------------------------------
async def test_the_worker_away_is_a_503_with_retry_after(
    start_gateway: Any, ada: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway(worker_grpc_target=closed_port_target(), worker_timeout_s=2.0)
    for response in (
        await api.post("/api/jobs", json={"type": "noop"}, headers=ada),
        await api.get("/api/jobs", headers=ada),
        await api.get("/api/jobs/j-1/events", headers=ada),
    ):
        error_shape(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"


async def test_a_gateway_without_the_worker_answers_503_naming_the_setting(
    gateway: Any, ada: dict[str, str], error_shape: Any
) -> None:
    for response in (
        await gateway.post("/api/jobs", json={"type": "noop"}, headers=ada),
        await gateway.get("/jobs/j-1", headers=ada),
    ):
        detail = error_shape(response, 503, "worker_not_configured")
        assert "AETHER_WORKER_GRPC_TARGET" in detail


async def test_jobs_need_a_caller(api: Any, fake_worker: Any, error_shape: Any) -> None:
    error_shape(await api.get("/api/jobs"), 401)
    error_shape(await api.post("/api/jobs", json={"type": "noop"}), 401)
    assert not fake_worker.calls


# -- admin ---------------------------------------------------------------------------------------
async def test_the_admin_routes_refuse_a_non_admin_at_the_gateway(
    api: Any, fake_worker: Any, ada: dict[str, str], error_shape: Any
) -> None:
    job = fake_worker.add("u-ada", "noop")
    fake_worker.dead.add(job.id)
    detail = error_shape(await api.get("/api/jobs/dead", headers=ada), 403, "forbidden")
    assert "admin" in detail
    error_shape(await api.post(f"/api/jobs/{job.id}/replay", headers=ada), 403, "forbidden")
    assert not fake_worker.calls  # refused here, before the worker is asked


async def test_an_admin_lists_dead_jobs_and_replays_one(
    api: Any, fake_worker: Any, admin: dict[str, str]
) -> None:
    poison = fake_worker.add("u-ada", "backtest")
    await fake_worker.update(
        poison.id,
        status="failed",
        attempts=3,
        error=worker_pb2.JobError(code="handler_error", message="bad bars"),
    )
    other = fake_worker.add("u-bob", "noop")
    await fake_worker.update(other.id, status="failed", attempts=3)
    fake_worker.dead |= {poison.id, other.id}

    dead = (await api.get("/api/jobs/dead", headers=admin)).json()
    assert [j["id"] for j in dead["jobs"]] == [other.id, poison.id]
    only = (await api.get("/api/jobs/dead", params={"type": "backtest"}, headers=admin)).json()
    assert [(j["id"], j["owner_id"]) for j in only["jobs"]] == [(poison.id, "u-ada")]
    assert fake_worker.calls_to("ListDeadJobs")[-1].request.type == "backtest"

    replayed = await api.post(f"/api/jobs/{poison.id}/replay", headers=admin)
    assert replayed.status_code == 202, replayed.text
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("queued", 0)
    assert replayed.json()["error"] is None
    (replay,) = fake_worker.calls_to("ReplayDeadJob")
    assert replay.metadata["authorization"] == admin["Authorization"]
    remaining = (await api.get("/api/jobs/dead", headers=admin)).json()
    assert [j["id"] for j in remaining["jobs"]] == [other.id]


# -- status and docs -----------------------------------------------------------------------------
async def test_the_status_page_checks_the_worker(
    api: Any, start_gateway: Any, gateway: Any
) -> None:
    assert (await api.get("/api/status")).json()["dependencies"]["worker"]["ok"] is True
    down = await start_gateway(worker_grpc_target=closed_port_target())
    status = await down.get("/api/status")
    assert status.status_code == 503
    assert status.json()["dependencies"]["worker"]["ok"] is False
    assert "worker" not in (await gateway.get("/api/status")).json()["dependencies"]


async def test_the_job_routes_are_documented(api: Any) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    routes = {
        "/api/jobs": ("get", "post"),
        "/api/jobs/{job_id}": ("get", "delete"),
        "/api/jobs/{job_id}/events": ("get",),
        "/api/jobs/dead": ("get",),
        "/api/jobs/{job_id}/replay": ("post",),
        "/generate": ("post",),
        "/jobs/{job_id}": ("get",),
    }
    for path, methods in routes.items():
        for method in methods:
            operation = paths[path][method]
            assert operation["summary"], (path, method)
            assert operation["tags"] == ["jobs"]
    assert "202" in paths["/api/jobs"]["post"]["responses"]
    assert (
        "text/event-stream"
        in paths["/api/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    )
