"""GET /api/jobs/{id}/events: the job as Server-Sent Events (WatchJob), one `job` event per
change, live, ending after the final status; an unknown or another user's job is the plain JSON
404; quiet jobs get keep-alive comments; a watch the worker drops midway ends with an `error`
event; a client that goes away cancels the WatchJob call. The worker is FakeWorker
(conftest.py), served over a real socket to a gateway under uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from aether.worker.v1 import worker_pb2


@pytest.fixture
def ada(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


def parse_block(block: str) -> tuple[str, Any]:
    """One SSE block -> (event, data); a comment -> ("", text)."""
    if block.startswith(":"):
        return "", block[1:].strip()
    lines = dict(line.split(": ", 1) for line in block.split("\n"))
    assert set(lines) == {"event", "data"}, block
    return lines["event"], json.loads(lines["data"])


async def next_event(blocks: AsyncIterator[str]) -> tuple[str, Any]:
    """The next event that is not a comment."""
    async with asyncio.timeout(5):
        async for block in blocks:
            kind, data = parse_block(block)
            if kind:
                return kind, data
    raise AssertionError("the stream ended")


async def sse_blocks(response: httpx.Response) -> AsyncIterator[str]:
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            yield block
    assert not buffer.strip(), buffer


async def test_progress_streams_live_then_the_final_status_ends_it(
    serve_gateway: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    gw = await serve_gateway(worker_grpc_target=fake_worker.address)
    job = fake_worker.add("u-ada", "backtest", params_json='{"symbol": "GOOG"}')
    async with (
        httpx.AsyncClient(base_url=gw.http_url, timeout=10) as client,
        client.stream("GET", f"/api/jobs/{job.id}/events", headers=ada) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache, no-store"
        assert "content-encoding" not in response.headers  # never gzipped: it must flow
        blocks = sse_blocks(response)
        kind, first = await next_event(blocks)
        assert (kind, first["id"], first["status"], first["progress"]) == (
            "job",
            job.id,
            "queued",
            0,
        )
        # Each change reaches the client while the job runs, not at its end.
        await fake_worker.update(job.id, status="running", attempts=1)
        assert (await next_event(blocks))[1]["status"] == "running"
        await fake_worker.update(job.id, progress=50, progress_message="sweep 5/10")
        _, half = await next_event(blocks)
        assert (half["progress"], half["progress_message"]) == (50, "sweep 5/10")
        await fake_worker.update(
            job.id, status="completed", progress=100, result_json='{"sharpe": 1.2}'
        )
        _, final = await next_event(blocks)
        assert (final["status"], final["result"]) == ("completed", {"sharpe": 1.2})
        assert final["finished_at"] is not None
        # ... and the stream ends after it.
        rest = [block async for block in blocks]
        assert all(block.startswith(":") for block in rest), rest
    (call,) = fake_worker.calls_to("WatchJob")
    assert (call.request.id, call.metadata["authorization"]) == (job.id, ada["Authorization"])


async def test_a_finished_job_is_one_event(
    start_gateway: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    api = await start_gateway(worker_grpc_target=fake_worker.address)
    job = fake_worker.add("u-ada", "noop")
    await fake_worker.update(job.id, status="failed", error=worker_pb2.JobError(code="timeout"))
    response = await api.get(f"/api/jobs/{job.id}/events", headers=ada)
    assert response.status_code == 200
    (block,) = [b for b in response.text.split("\n\n") if b]
    kind, data = parse_block(block)
    assert (kind, data["status"], data["error"]) == (
        "job",
        "failed",
        {"code": "timeout", "message": ""},
    )


async def test_an_unknown_job_is_the_json_404_before_any_event(
    start_gateway: Any, fake_worker: Any, ada: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway(worker_grpc_target=fake_worker.address)
    response = await api.get("/api/jobs/no-such-job/events", headers=ada)
    error_shape(response, 404, "job_not_found")
    assert response.headers["content-type"] == "application/json"


async def test_a_quiet_job_gets_keepalive_comments(
    start_gateway: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    api = await start_gateway(worker_grpc_target=fake_worker.address, worker_sse_keepalive_s=0.05)
    job = fake_worker.add("u-ada", "noop")

    async def finish_later() -> None:
        await asyncio.sleep(0.5)  # ten keep-alive intervals
        await fake_worker.update(job.id, status="completed", result_json="{}")

    finisher = asyncio.create_task(finish_later())
    response = await api.get(f"/api/jobs/{job.id}/events", headers=ada)
    await finisher
    parsed = [parse_block(b) for b in response.text.split("\n\n") if b]
    assert parsed[0][0] == "job"
    assert ("", "keep-alive") in parsed
    assert parsed[-1][0] == "job"
    assert parsed[-1][1]["status"] == "completed"


async def test_a_watch_the_worker_drops_midway_ends_with_an_error_event(
    start_gateway: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    api = await start_gateway(worker_grpc_target=fake_worker.address)
    job = fake_worker.add("u-ada", "noop")

    async def drops(method: str, request: Any) -> AsyncIterator[Any]:
        yield worker_pb2.WatchJobResponse(job=fake_worker.jobs[request.id])

    fake_worker.stream = drops  # a worker replica shutting down ends its streams
    response = await api.get(f"/api/jobs/{job.id}/events", headers=ada)
    assert response.status_code == 200
    parsed = [parse_block(b) for b in response.text.split("\n\n") if b]
    assert [kind for kind, _ in parsed] == ["job", "error"]
    assert parsed[1][1] == {
        "error": "watch_interrupted",
        "detail": "the worker stopped watching the job before it finished; watch again",
        "status_code": 503,
    }


async def test_a_client_that_goes_away_cancels_the_watch(
    serve_gateway: Any, fake_worker: Any, ada: dict[str, str]
) -> None:
    gw = await serve_gateway(worker_grpc_target=fake_worker.address)
    job = fake_worker.add("u-ada", "noop")
    async with (
        httpx.AsyncClient(base_url=gw.http_url, timeout=10) as client,
        client.stream("GET", f"/api/jobs/{job.id}/events", headers=ada) as response,
    ):
        assert (await next_event(sse_blocks(response)))[0] == "job"
    # The response is closed: the gateway sees the disconnect and cancels the WatchJob call.
    assert await fake_worker.wait_cancelled() == ["WatchJob"]
