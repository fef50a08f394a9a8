"""WS /ws/ai-chat: authentication and origin like chat's socket, the frames of an answer in
order, cancel and disconnect cancelling the upstream call, one answer at a time, bad frames
answered without losing the connection, the per-connection rate. A real uvicorn serves the
gateway; ai is a scripted gRPC peer (FakeAi in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aether.ai.v1 import ai_pb2
from aether_common import errors

TIMEOUT = 5.0
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


async def open_ws(
    gateway: Any, token: str | None = None, *, origin: str | None = None, query: str = ""
) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await connect(
        f"ws://127.0.0.1:{gateway.port}/ws/ai-chat{query}",
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        open_timeout=TIMEOUT,
        max_size=None,
    )


async def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return frame


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def ready(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv(ws)
    assert frame["type"] == "ready", frame
    return frame


@pytest.fixture
async def gw(serve_gateway: Any, fake_ai: Any) -> Any:
    return await serve_gateway(ai_grpc_target=fake_ai.address)


# -- connecting ------------------------------------------------------------------------------------
async def test_a_bearer_header_authenticates_and_ping_answers_pong(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw, token(sub="u-ada")) as ws:
        hello = await ready(ws)
        assert hello["user_id"] == "u-ada"
        assert hello["rate_limit"] == {"limit": 60, "window_s": 60.0}
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert await recv(ws) == {"type": "pong", "id": "p1"}
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_a_browser_authenticates_with_a_first_auth_frame(
    gw: Any, token: Callable[..., str]
) -> None:
    async with await open_ws(gw) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token(sub="u-web")}))
        assert (await ready(ws))["user_id"] == "u-web"


async def test_no_auth_frame_in_time_closes_4001(serve_gateway: Any, fake_ai: Any) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address, ai_ws_auth_timeout_s=0.3)
    async with await open_ws(gw) as ws:
        error = await recv(ws)
        assert (error["type"], error["error"], error["status_code"]) == (
            "error",
            "auth_timeout",
            401,
        )
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "auth frame" in reason


@pytest.mark.parametrize(
    "first_frame", ["not json", json.dumps({"type": "chat", "message": "hi"}), '{"type":"auth"}']
)
async def test_anything_but_an_auth_frame_first_closes_4001(gw: Any, first_frame: str) -> None:
    async with await open_ws(gw) as ws:
        await ws.send(first_frame)
        assert (await recv(ws))["type"] == "error"
        code, _ = await closed_with(ws)
    assert code == 4001


async def test_bad_tokens_are_refused_4001(
    gw: Any, fake_ai: Any, token: Callable[..., str], new_key: Any, mint_token: Any
) -> None:
    for attempt in (mint_token(new_key()), token(exp=1)):
        async with await open_ws(gw, attempt) as ws:
            error = await recv(ws)
            assert error["error"] in ("invalid_token", "token_expired"), error
            assert error["status_code"] == 401
            code, _ = await closed_with(ws)
        assert code == 4001
    async with await open_ws(gw, query=f"?token={token()}") as ws:
        assert (await recv(ws))["error"] == "token_in_url"
        code, _ = await closed_with(ws)
    assert code == 4001
    assert not fake_ai.calls


async def test_origins_outside_the_cors_list_are_refused_4003(
    serve_gateway: Any, fake_ai: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address, cors_origins=["https://app.test"])
    async with await open_ws(gw, token(), origin="https://evil.test") as ws:
        error = await recv(ws)
        assert (error["error"], error["status_code"]) == ("forbidden_origin", 403)
        code, _ = await closed_with(ws)
    assert code == 4003
    async with await open_ws(gw, token(), origin="https://app.test") as ws:
        await ready(ws)


async def test_without_ai_configured_the_socket_closes_1013(
    serve_gateway: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway()
    async with await open_ws(gw, token()) as ws:
        error = await recv(ws)
        assert (error["error"], error["status_code"]) == ("unavailable", 503)
        code, _ = await closed_with(ws)
    assert code == 1013


# -- answers ---------------------------------------------------------------------------------------
async def test_an_answer_streams_start_chunks_sources_done_with_the_id(
    gw: Any, fake_ai: Any, token: Callable[..., str], ai_events: Any
) -> None:
    events = ai_events("Hello world")
    sources = ai_pb2.ChatResponse(
        sources=ai_pb2.Sources(
            sources=[ai_pb2.Source(n=1, id="d1", namespace="knowledge", score=0.5, text="t")]
        )
    )
    fake_ai.streams["Chat"] = [*events[:-1], sources, events[-1]]
    raw = token(sub="u-ada")
    async with await open_ws(gw, raw) as ws:
        await ready(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "chat",
                    "id": "q1",
                    "message": "hi",
                    "mode": "fast",
                    "conversation_id": "conv-1",
                    "no_cache": True,
                }
            )
        )
        frames = [await recv(ws) for _ in range(5)]
    assert frames == [
        {
            "type": "start",
            "request_id": "req-1",
            "conversation_id": "conv-1",
            "mode": "fast",
            "model": "smollm2-135m",
            "agents": [],
            "cached": False,
            "id": "q1",
        },
        {"type": "chunk", "content": "Hello", "agent": "", "id": "q1"},
        {"type": "chunk", "content": " world", "agent": "", "id": "q1"},
        {
            "type": "sources",
            "sources": [{"n": 1, "id": "d1", "namespace": "knowledge", "score": 0.5, "text": "t"}],
            "id": "q1",
        },
        {
            "type": "done",
            "answer": "Hello world",
            "usage": USAGE,
            "finish_reason": "stop",
            "parts": [],
            "id": "q1",
        },
    ]
    (call,) = fake_ai.calls_to("Chat")
    assert call.request == ai_pb2.ChatRequest(
        message="hi", mode="fast", conversation_id="conv-1", no_cache=True
    )
    assert call.metadata["authorization"] == f"Bearer {raw}"


async def test_a_cancel_frame_cancels_the_upstream_call_and_the_connection_goes_on(
    gw: Any, fake_ai: Any, token: Callable[..., str], ai_events: Any, hold: object
) -> None:
    fake_ai.streams["Chat"] = [*ai_events()[:2], hold]
    async with await open_ws(gw, token()) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "chat", "id": "q1", "message": "long one"}))
        assert (await recv(ws))["type"] == "start"
        assert (await recv(ws))["type"] == "chunk"
        await ws.send(json.dumps({"type": "cancel"}))
        assert await recv(ws) == {
            "type": "error",
            "error": "cancelled",
            "detail": "the answer was cancelled",
            "status_code": 499,
            "id": "q1",
        }
        assert await fake_ai.wait_cancelled() == ["Chat"]
        # Nothing to cancel any more; the next question is answered.
        await ws.send(json.dumps({"type": "cancel", "id": "c2"}))
        assert (await recv(ws))["error"] == "not_generating"
        fake_ai.streams["Chat"] = ai_events("Again")
        await ws.send(json.dumps({"type": "chat", "id": "q2", "message": "short one"}))
        kinds = [(await recv(ws))["type"] for _ in range(3)]
        assert kinds == ["start", "chunk", "done"]


async def test_a_disconnect_cancels_the_upstream_call(
    gw: Any, fake_ai: Any, token: Callable[..., str], ai_events: Any, hold: object
) -> None:
    fake_ai.streams["Chat"] = [*ai_events()[:2], hold]
    async with await open_ws(gw, token()) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "chat", "message": "long one"}))
        assert (await recv(ws))["type"] == "start"
    assert await fake_ai.wait_cancelled() == ["Chat"]


async def test_a_second_chat_while_one_runs_is_busy(
    gw: Any, fake_ai: Any, token: Callable[..., str], ai_events: Any, hold: object
) -> None:
    fake_ai.streams["Chat"] = [ai_events()[0], hold]
    async with await open_ws(gw, token()) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "chat", "id": "q1", "message": "one"}))
        assert (await recv(ws))["type"] == "start"
        await ws.send(json.dumps({"type": "chat", "id": "q2", "message": "two"}))
        busy = await recv(ws)
        assert (busy["type"], busy["error"], busy["status_code"], busy["id"]) == (
            "error",
            "busy",
            409,
            "q2",
        )
        assert len(fake_ai.calls_to("Chat")) == 1
        await ws.send(json.dumps({"type": "cancel"}))
        assert (await recv(ws))["error"] == "cancelled"


async def test_upstream_errors_become_error_frames(
    gw: Any, fake_ai: Any, token: Callable[..., str], ai_events: Any
) -> None:
    async with await open_ws(gw, token()) as ws:
        await ready(ws)
        fake_ai.streams["Chat"] = errors.Unavailable("every model slot is busy", code="ai_busy")
        await ws.send(json.dumps({"type": "chat", "id": "q1", "message": "hi"}))
        assert await recv(ws) == {
            "type": "error",
            "error": "ai_busy",
            "detail": "every model slot is busy",
            "status_code": 503,
            "retry_after": 2,
            "id": "q1",
        }
        fake_ai.streams["Chat"] = [*ai_events()[:2], errors.NotFound("conversation not found")]
        await ws.send(json.dumps({"type": "chat", "message": "hi", "conversation_id": "c-x"}))
        kinds = [await recv(ws) for _ in range(3)]
        assert [k["type"] for k in kinds] == ["start", "chunk", "error"]
        assert (kinds[-1]["error"], kinds[-1]["status_code"]) == ("not_found", 404)
        # Still usable.
        fake_ai.streams["Chat"] = ai_events()
        await ws.send(json.dumps({"type": "chat", "message": "hi"}))
        assert [(await recv(ws))["type"] for _ in range(4)] == ["start", "chunk", "chunk", "done"]


# -- bad frames and limits -------------------------------------------------------------------------
async def test_bad_frames_get_error_frames_and_the_connection_goes_on(
    serve_gateway: Any, fake_ai: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address, ai_ws_max_frame_bytes=2048)
    cases: list[tuple[str | bytes, str, int]] = [
        ("{not json", "invalid_frame", 400),
        ("[1, 2]", "invalid_frame", 400),
        (json.dumps({"no": "type"}), "invalid_frame", 400),
        (json.dumps({"type": "launch_missiles"}), "unknown_type", 400),
        (json.dumps({"type": "chat"}), "invalid_frame", 400),
        (json.dumps({"type": "chat", "message": ""}), "invalid_frame", 400),
        (json.dumps({"type": "chat", "message": "hi", "temperature": 2}), "invalid_frame", 400),
        (json.dumps({"type": "chat", "message": "x" * 4000}), "too_large", 413),
        (b'{"type":"ping"}', "invalid_frame", 400),
    ]
    async with await open_ws(gw, token()) as ws:
        await ready(ws)
        for raw, code, status in cases:
            await ws.send(raw)
            error = await recv(ws)
            assert (error["type"], error["error"], error["status_code"]) == ("error", code, status)
            assert error["detail"]
        await ws.send(json.dumps({"type": "chat", "id": "q9"}))
        missing = await recv(ws)
        assert missing["id"] == "q9"
        assert "message" in missing["detail"]
        await ws.send(json.dumps({"type": "ping", "id": "still-here"}))
        assert await recv(ws) == {"type": "pong", "id": "still-here"}
    assert not fake_ai.calls


async def test_frames_past_the_plan_rate_are_refused_but_cancel_is_not(
    serve_gateway: Any, fake_ai: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address, ai_ws_rate_free=2)
    async with await open_ws(gw, token(plan="free")) as ws:
        assert (await ready(ws))["rate_limit"]["limit"] == 2
        for _ in range(2):
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"
        await ws.send(json.dumps({"type": "ping", "id": "p3"}))
        limited = await recv(ws)
        assert (limited["error"], limited["status_code"], limited["id"]) == (
            "rate_limited",
            429,
            "p3",
        )
        assert limited["retry_after"] > 0
        await ws.send(json.dumps({"type": "cancel"}))
        assert (await recv(ws))["error"] == "not_generating"
    async with await open_ws(gw, token(plan="admin", roles=["admin"])) as ws:
        assert (await ready(ws))["rate_limit"]["limit"] is None


async def test_an_idle_connection_is_closed_4008(
    serve_gateway: Any, fake_ai: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address, ai_ws_idle_timeout_s=0.3)
    async with await open_ws(gw, token()) as ws:
        await ready(ws)
        code, reason = await closed_with(ws)
    assert code == 4008
    assert "idle" in reason


async def test_a_fresh_token_renews_the_connection(gw: Any, token: Callable[..., str]) -> None:
    async with await open_ws(gw, token(sub="u-ada")) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "auth", "id": "a1", "token": token(sub="u-ada")}))
        ack = await recv(ws)
        assert (ack["type"], ack["op"], ack["id"]) == ("ack", "auth", "a1")
        await ws.send(json.dumps({"type": "auth", "token": token(sub="u-eve")}))
        code, _ = await closed_with(ws)
    assert code == 4001


async def test_the_connection_ends_when_its_token_expires(
    serve_gateway: Any, fake_ai: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(ai_grpc_target=fake_ai.address)
    async with await open_ws(gw, token(exp=int(time.time()) + 3)) as ws:
        await ready(ws)
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "expired" in reason
