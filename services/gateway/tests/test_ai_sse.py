"""POST /api/ai/chat/stream: Server-Sent Events in order, errors before the first byte as the
normal JSON error, errors after it as an `error` event, and a client that goes away cancels the
upstream call. ai is a scripted gRPC peer (FakeAi in conftest.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from aether.ai.v1 import ai_pb2
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


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """`event:`/`data:` blocks -> [(event, data)]; comment blocks -> ("", comment)."""
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append(("", block[1:].strip()))
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(lines) == {"event", "data"}, block
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture
async def api(start_gateway: Any, fake_ai: Any) -> Any:
    return await start_gateway(ai_grpc_target=fake_ai.address)


@pytest.fixture
def caller(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_the_stream_is_start_chunks_sources_done_in_order(
    api: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any
) -> None:
    events = ai_events("Hello world")
    sources = ai_pb2.ChatResponse(
        sources=ai_pb2.Sources(
            sources=[ai_pb2.Source(n=1, id="d1", namespace="knowledge", score=0.5, text="t")]
        )
    )
    fake_ai.streams["Chat"] = [*events[:-1], sources, events[-1]]
    response = await api.post(
        "/api/ai/chat/stream", json={"message": "hi", "mode": "fast"}, headers=caller
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache, no-store"
    assert "content-encoding" not in response.headers  # never gzipped: it must flow
    assert response.text.startswith('event: start\ndata: {"request_id":"req-1"')
    assert parse_sse(response.text) == [
        (
            "start",
            {
                "request_id": "req-1",
                "conversation_id": "conv-1",
                "mode": "fast",
                "model": "smollm2-135m",
                "agents": [],
                "cached": False,
            },
        ),
        ("chunk", {"content": "Hello", "agent": ""}),
        ("chunk", {"content": " world", "agent": ""}),
        (
            "sources",
            {
                "sources": [
                    {"n": 1, "id": "d1", "namespace": "knowledge", "score": 0.5, "text": "t"}
                ]
            },
        ),
        (
            "done",
            {"answer": "Hello world", "usage": USAGE, "finish_reason": "stop", "parts": []},
        ),
    ]
    (call,) = fake_ai.calls_to("Chat")
    assert (call.request.message, call.request.mode) == ("hi", "fast")
    assert call.metadata["authorization"] == caller["Authorization"]


async def test_an_error_before_the_first_byte_is_the_json_error(
    api: Any, fake_ai: Any, caller: dict[str, str], error_shape: Any
) -> None:
    fake_ai.streams["Chat"] = errors.Unavailable("every model slot is busy", code="ai_busy")
    response = await api.post("/api/ai/chat/stream", json={"message": "hi"}, headers=caller)
    error_shape(response, 503, "ai_busy")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "2"
    assert "x-ratelimit-limit" in response.headers  # the edge middleware still saw it
    fake_ai.streams["Chat"] = errors.NotFound("conversation not found")
    response = await api.post(
        "/api/ai/chat/stream", json={"message": "hi", "conversation_id": "c-9"}, headers=caller
    )
    error_shape(response, 404, "not_found")


async def test_an_error_after_the_start_ends_the_stream_with_an_error_event(
    api: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any
) -> None:
    events = ai_events("Hello world")
    fake_ai.streams["Chat"] = [*events[:2], errors.Timeout("the model took too long")]
    response = await api.post("/api/ai/chat/stream", json={"message": "hi"}, headers=caller)
    assert response.status_code == 200
    parsed = parse_sse(response.text)
    assert [kind for kind, _ in parsed] == ["start", "chunk", "error"]
    assert parsed[-1][1] == {
        "error": "timeout",
        "detail": "the model took too long",
        "status_code": 504,
    }


async def test_a_stream_without_done_ends_with_an_error_event(
    api: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any
) -> None:
    fake_ai.streams["Chat"] = ai_events()[:-1]
    response = await api.post("/api/ai/chat/stream", json={"message": "hi"}, headers=caller)
    parsed = parse_sse(response.text)
    assert parsed[-1] == (
        "error",
        {
            "error": "bad_gateway",
            "detail": "the ai service ended the answer without finishing it",
            "status_code": 502,
        },
    )


async def test_a_quiet_stream_gets_keepalive_comments(
    start_gateway: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any
) -> None:
    api = await start_gateway(ai_grpc_target=fake_ai.address, ai_sse_keepalive_s=0.05)
    events = ai_events("Hello")

    async def slow(_: Any) -> AsyncIterator[Any]:
        yield events[0]
        await asyncio.sleep(0.5)  # ten keep-alive intervals
        for event in events[1:]:
            yield event

    fake_ai.streams["Chat"] = slow
    response = await api.post("/api/ai/chat/stream", json={"message": "hi"}, headers=caller)
    parsed = parse_sse(response.text)
    kinds = [kind for kind, _ in parsed]
    assert kinds[0] == "start"
    assert kinds[-2:] == ["chunk", "done"]
    assert ("", "keep-alive") in parsed


async def test_a_client_that_goes_away_cancels_the_upstream_call(
    serve_gateway: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any, hold: object
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address)
    fake_ai.streams["Chat"] = [*ai_events()[:2], hold]
    async with (
        httpx.AsyncClient(base_url=gw.http_url, timeout=10) as client,
        client.stream(
            "POST", "/api/ai/chat/stream", json={"message": "hi"}, headers=caller
        ) as response,
    ):
        assert response.status_code == 200
        seen = ""
        async for text in response.aiter_text():
            seen += text
            if "event: chunk" in seen:
                break
    # The response is closed: the gateway sees the disconnect and cancels the Chat call.
    assert await fake_ai.wait_cancelled() == ["Chat"]


async def test_a_client_gone_before_the_first_event_cancels_too(
    serve_gateway: Any, fake_ai: Any, caller: dict[str, str], hold: object
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address)
    fake_ai.streams["Chat"] = [hold]  # queued: nothing comes before the client gives up
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as client:
        request = asyncio.create_task(
            client.post("/api/ai/chat/stream", json={"message": "hi"}, headers=caller)
        )
        await fake_ai.wait_streaming()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    assert await fake_ai.wait_cancelled() == ["Chat"]
