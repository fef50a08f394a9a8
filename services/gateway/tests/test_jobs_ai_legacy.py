"""The old `/api/ai/generate?async=true` and `/api/ai/jobs/{id}` on the worker: a new async
generation is an `ai.generate` worker job (202 `{job_id, status}` with the old status names and
`Location: /api/ai/jobs/{id}`); reading a job maps the worker's job onto the old shape
(completed -> succeeded, cancelled -> failed; `answer`, `usage`, `conversation_id` from the
result, which is the answer `POST /api/ai/chat` gives); an id the worker does not know is read
from ai's own table (jobs from before the worker). test_ai_routes.py keeps the behaviour of a
gateway without the worker. The worker and ai are scripted peers (conftest.py)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from aether.ai.v1 import ai_pb2
from aether.worker.v1 import worker_pb2
from aether_common import errors

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 2,
    "total_tokens": 14,
    "cost_usd": 0.25,
    "latency_ms": 40,
    "first_token_ms": 10,
    "cached": False,
    "model": "smollm2-135m",
}
# What the worker's ai.generate handler stores: the body `POST /api/ai/chat` answers.
RESULT = {
    "answer": "Hello world",
    "conversation_id": "conv-7",
    "request_id": "req-1",
    "mode": "fast",
    "model": "smollm2-135m",
    "agents": [],
    "cached": False,
    "sources": [],
    "parts": [],
    "usage": USAGE,
    "finish_reason": "stop",
}


@pytest.fixture
async def api(start_gateway: Any, fake_worker: Any, fake_ai: Any) -> Any:
    return await start_gateway(
        worker_grpc_target=fake_worker.address, ai_grpc_target=fake_ai.address
    )


@pytest.fixture
def ada(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_async_generate_is_a_worker_job_in_the_old_shape(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str]
) -> None:
    response = await api.post(
        "/api/ai/generate", params={"async": "true"}, json={"message": "later"}, headers=ada
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued == {"job_id": queued["job_id"], "status": "queued"}
    assert response.headers["location"] == f"/api/ai/jobs/{queued['job_id']}"
    uuid.UUID(queued["job_id"])  # the old path takes a UUID
    (call,) = fake_worker.calls_to("SubmitJob")
    assert call.request.type == "ai.generate"
    assert json.loads(call.request.params_json) == {"message": "later", "no_cache": False}
    assert not fake_ai.calls_to("SubmitJob")
    # Without async it is still ai's whole answer.
    now = await api.post("/api/ai/generate", json={"message": "now"}, headers=ada)
    assert now.status_code == 200
    assert now.json()["answer"] == "Hello world"


@pytest.mark.parametrize(
    ("status", "old"),
    [("queued", "queued"), ("running", "running"), ("completed", "succeeded")],
)
async def test_a_worker_job_reads_with_the_old_status_and_fields(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str], status: str, old: str
) -> None:
    job = fake_worker.add("u-ada", "ai.generate", params_json='{"message": "hi"}')
    result = json.dumps(RESULT) if status == "completed" else ""
    await fake_worker.update(job.id, status=status, result_json=result)
    response = await api.get(f"/api/ai/jobs/{job.id}", headers=ada)
    assert response.status_code == 200, response.text
    body = response.json()
    done = status == "completed"
    assert body == {
        "job_id": job.id,
        "status": old,
        "created_at": body["created_at"],
        "finished_at": body["finished_at"] if done else None,
        "answer": "Hello world" if done else None,
        "usage": USAGE if done else None,
        "conversation_id": "conv-7" if done else None,
        "error": None,
    }
    assert body["created_at"].endswith("Z")
    assert not fake_ai.calls  # the worker knew it


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (
            "failed",
            worker_pb2.JobError(code="handler_error", message="model failed"),
            "model failed",
        ),
        ("cancelled", worker_pb2.JobError(code="cancelled"), "cancelled"),
    ],
)
async def test_a_failed_or_cancelled_worker_job_is_failed_with_its_error(
    api: Any,
    fake_worker: Any,
    ada: dict[str, str],
    status: str,
    error: worker_pb2.JobError,
    message: str,
) -> None:
    job = fake_worker.add("u-ada", "ai.generate")
    await fake_worker.update(job.id, status=status, error=error)
    body = (await api.get(f"/api/ai/jobs/{job.id}", headers=ada)).json()
    assert (body["status"], body["error"], body["answer"], body["usage"]) == (
        "failed",
        message,
        None,
        None,
    )
    assert body["finished_at"] is not None


async def test_an_id_the_worker_does_not_know_is_read_from_ais_own_table(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str], error_shape: Any
) -> None:
    old_id = str(uuid.uuid4())
    fake_ai.answers["GetJob"] = ai_pb2.GetJobResponse(
        job=ai_pb2.Job(
            job_id=old_id,
            status=ai_pb2.JOB_STATUS_SUCCEEDED,
            answer="from before",
            conversation_id="conv-0",
        )
    )
    response = await api.get(f"/api/ai/jobs/{old_id}", headers=ada)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["job_id"], body["status"], body["answer"], body["conversation_id"]) == (
        old_id,
        "succeeded",
        "from before",
        "conv-0",
    )
    assert fake_worker.calls_to("GetJob")[0].request.id == old_id  # the worker first
    (ai_call,) = fake_ai.calls_to("GetJob")
    assert (ai_call.request.job_id, ai_call.metadata["authorization"]) == (
        old_id,
        ada["Authorization"],
    )
    # Neither knows it: ai's 404.
    fake_ai.answers["GetJob"] = errors.NotFound("job not found")
    error_shape(await api.get(f"/api/ai/jobs/{uuid.uuid4()}", headers=ada), 404, "not_found")


async def test_a_worker_job_of_another_type_is_not_an_ai_job(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str], error_shape: Any
) -> None:
    backtest = fake_worker.add("u-ada", "backtest")
    fake_ai.answers["GetJob"] = errors.NotFound("job not found")
    error_shape(await api.get(f"/api/ai/jobs/{backtest.id}", headers=ada), 404, "not_found")
    assert fake_ai.calls_to("GetJob")[0].request.job_id == backtest.id


async def test_the_worker_away_is_a_503_not_a_fallback(
    start_gateway: Any, fake_ai: Any, ada: dict[str, str], error_shape: Any
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    api = await start_gateway(
        worker_grpc_target=closed, ai_grpc_target=fake_ai.address, worker_timeout_s=2.0
    )
    response = await api.get(f"/api/ai/jobs/{uuid.uuid4()}", headers=ada)
    error_shape(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert not fake_ai.calls
