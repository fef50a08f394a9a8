"""The platform documents' job shapes at the root path: `POST /generate?async=true` (the body of
`POST /api/ai/chat`) queues an `ai.generate` worker job whose params are that body, `POST
/generate` without it answers at once through ai (as /api/ai/generate), `GET /jobs/{id}` reads
any job of the caller's as `{job_id, status, progress, result, error, created_at, finished_at}`.
The worker and ai are scripted peers (FakeWorker, FakeAi in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from aether.worker.v1 import worker_pb2


@pytest.fixture
async def api(start_gateway: Any, fake_worker: Any, fake_ai: Any) -> Any:
    return await start_gateway(
        worker_grpc_target=fake_worker.address, ai_grpc_target=fake_ai.address
    )


@pytest.fixture
def ada(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_generate_async_queues_an_ai_generate_job_with_the_chat_body(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str]
) -> None:
    body = {"message": "  Summarise GOOG  ", "mode": "fast", "conversation_id": "conv-1"}
    response = await api.post("/generate", params={"async": "true"}, json=body, headers=ada)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued == {"job_id": queued["job_id"], "status": "queued"}
    assert response.headers["location"] == f"/jobs/{queued['job_id']}"
    (call,) = fake_worker.calls_to("SubmitJob")
    assert call.request.type == "ai.generate"
    assert call.metadata["authorization"] == ada["Authorization"]
    # The body as the gateway validated it (trimmed; unset optional fields left out).
    assert json.loads(call.request.params_json) == {
        "message": "Summarise GOOG",
        "mode": "fast",
        "conversation_id": "conv-1",
        "no_cache": False,
    }
    assert fake_worker.jobs[queued["job_id"]].owner_id == "u-ada"
    assert not fake_ai.calls  # the worker calls ai, not the gateway


async def test_generate_without_async_answers_now_through_ai(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str]
) -> None:
    response = await api.post("/generate", json={"message": "now"}, headers=ada)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["answer"], answer["conversation_id"], answer["finish_reason"]) == (
        "Hello world",
        "conv-1",
        "stop",
    )
    assert fake_ai.calls_to("ChatWhole")[0].request.request.message == "now"
    assert not fake_worker.calls


async def test_generate_refuses_a_bad_body_before_any_call(
    api: Any, fake_worker: Any, fake_ai: Any, ada: dict[str, str], error_shape: Any
) -> None:
    response = await api.post(
        "/generate", params={"async": "true"}, json={"message": ""}, headers=ada
    )
    assert "message" in error_shape(response, 400, "validation")
    assert not fake_worker.calls
    assert not fake_ai.calls


async def test_a_job_reads_in_the_documents_shape(
    api: Any, fake_worker: Any, ada: dict[str, str], token: Callable[..., str], error_shape: Any
) -> None:
    queued = (
        await api.post("/generate", params={"async": "true"}, json={"message": "hi"}, headers=ada)
    ).json()
    job_id = queued["job_id"]
    body = (await api.get(f"/jobs/{job_id}", headers=ada)).json()
    assert body == {
        "job_id": job_id,
        "status": "queued",
        "progress": 0,
        "result": None,
        "error": None,
        "created_at": body["created_at"],
        "finished_at": None,
    }
    await fake_worker.update(job_id, status="running", progress=30)
    assert (await api.get(f"/jobs/{job_id}", headers=ada)).json()["progress"] == 30
    await fake_worker.update(
        job_id, status="completed", progress=100, result_json='{"answer": "Hello"}'
    )
    done = (await api.get(f"/jobs/{job_id}", headers=ada)).json()
    assert (done["status"], done["result"]) == ("completed", {"answer": "Hello"})
    assert done["finished_at"] is not None

    failed = fake_worker.add("u-ada", "backtest")
    await fake_worker.update(
        failed.id, status="failed", error=worker_pb2.JobError(code="invalid_data", message="x")
    )
    body = (await api.get(f"/jobs/{failed.id}", headers=ada)).json()
    assert (body["status"], body["error"]) == ("failed", {"code": "invalid_data", "message": "x"})

    bob = {"Authorization": f"Bearer {token(sub='u-bob')}"}
    error_shape(await api.get(f"/jobs/{job_id}", headers=bob), 404, "job_not_found")
