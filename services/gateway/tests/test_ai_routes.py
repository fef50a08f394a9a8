"""/api/ai/* REST: each route calls its AiService RPC with the caller's token and shapes the answer
(chat, analyze and generate: one whole answer); bad input is a 4xx in the one error shape before
any gRPC call; ai's errors keep their meaning. ai is a scripted gRPC peer here (FakeAi in
conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether_common import errors

JOB_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
USAGE_OUT = {
    "prompt_tokens": 12,
    "completion_tokens": 2,
    "total_tokens": 14,
    "cost_usd": 0.25,
    "latency_ms": 40,
    "first_token_ms": 10,
    "cached": False,
    "model": "smollm2-135m",
}
ANSWER_OUT = {
    "answer": "Hello world",
    "conversation_id": "conv-1",
    "request_id": "req-1",
    "mode": "fast",
    "model": "smollm2-135m",
    "agents": [],
    "cached": False,
    "sources": [],
    "parts": [],
    "usage": USAGE_OUT,
    "finish_reason": "stop",
}


def ts(second: int = 5, micros: int = 678_901) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime(2025, 1, 2, 3, 4, second, micros, tzinfo=UTC))
    return value


def bars(n: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "time": f"2025-01-0{i + 1}T00:00:00Z",
            "open": 10 + i,
            "high": 12.5 + i,
            "low": 9 + i,
            "close": 11 + i,
            "volume": 1000,
        }
        for i in range(n)
    ]


@pytest.fixture
async def api(start_gateway: Any, fake_ai: Any) -> Any:
    return await start_gateway(ai_grpc_target=fake_ai.address)


@pytest.fixture
def caller(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


@pytest.fixture
def admin(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-root', plan='admin', roles=['admin'])}"}


# -- answers -------------------------------------------------------------------------------------
async def test_chat_answers_whole_and_forwards_the_request_and_token(
    api: Any, fake_ai: Any, caller: dict[str, str]
) -> None:
    body = {
        "message": "  What is a candle?  ",
        "mode": "fast",
        "model": "smollm2-135m",
        "conversation_id": "conv-1",
        "no_cache": True,
    }
    response = await api.post("/api/ai/chat", json=body, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == ANSWER_OUT
    (call,) = fake_ai.calls_to("ChatWhole")  # one unary call, no stream
    assert call.request.request == ai_pb2.ChatRequest(
        message="What is a candle?",
        mode="fast",
        model="smollm2-135m",
        conversation_id="conv-1",
        no_cache=True,
    )
    assert call.metadata["authorization"] == caller["Authorization"]


async def test_a_multi_agent_answer_keeps_its_parts_and_sources(
    api: Any, fake_ai: Any, caller: dict[str, str]
) -> None:
    usage = ai_pb2.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7, model="m")
    fake_ai.streams["Chat"] = [
        ai_pb2.ChatResponse(
            started=ai_pb2.Started(
                request_id="r",
                conversation_id="c",
                mode="fast",
                model="m",
                agents=["fast", "learn"],
                cached=True,
            )
        ),
        ai_pb2.ChatResponse(chunk=ai_pb2.Chunk(content="A", agent="fast")),
        ai_pb2.ChatResponse(
            sources=ai_pb2.Sources(
                sources=[
                    ai_pb2.Source(n=1, id="doc-1", namespace="knowledge", score=0.75, text="t")
                ]
            )
        ),
        ai_pb2.ChatResponse(
            done=ai_pb2.Done(
                answer="fast: A\nlearn: B",
                usage=usage,
                finish_reason="cached",
                parts=[
                    ai_pb2.AgentPart(agent="fast", model="m", content="A", usage=usage),
                    ai_pb2.AgentPart(agent="learn", model="m", content="B"),
                ],
            )
        ),
    ]
    response = await api.post(
        "/api/ai/chat", json={"message": "hi", "agents": ["fast", "learn"]}, headers=caller
    )
    assert response.status_code == 200, response.text
    usage_out = {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "cost_usd": 0.0,
        "latency_ms": 0,
        "first_token_ms": 0,
        "cached": False,
        "model": "m",
    }
    assert response.json() == {
        "answer": "fast: A\nlearn: B",
        "conversation_id": "c",
        "request_id": "r",
        "mode": "fast",
        "model": "m",
        "agents": ["fast", "learn"],
        "cached": True,
        "sources": [{"n": 1, "id": "doc-1", "namespace": "knowledge", "score": 0.75, "text": "t"}],
        "parts": [
            {"agent": "fast", "model": "m", "content": "A", "usage": usage_out},
            {"agent": "learn", "model": "m", "content": "B", "usage": None},
        ],
        "usage": usage_out,
        "finish_reason": "cached",
    }
    assert list(fake_ai.calls_to("ChatWhole")[0].request.request.agents) == ["fast", "learn"]


async def test_analyze_sends_the_bars_and_answers_whole(
    api: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any
) -> None:
    fake_ai.streams["Analyze"] = ai_events(response=ai_pb2.AnalyzeResponse)
    body = {"symbol": " brk.b ", "bars": bars(3), "question": "trend?", "no_cache": True}
    response = await api.post("/api/ai/analyze", json=body, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == ANSWER_OUT
    (call,) = fake_ai.calls_to("AnalyzeWhole")
    analyze = call.request.request
    assert analyze.symbol == "BRK.B"
    assert analyze.question == "trend?"
    assert analyze.no_cache is True
    assert len(analyze.bars) == 3
    first = analyze.bars[0]
    assert first.time.ToDatetime() == datetime(2025, 1, 1)
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        10,
        12.5,
        9,
        11,
        1000,
    )


async def test_a_whole_answer_without_done_is_a_502(
    api: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any, error_shape: Any
) -> None:
    fake_ai.streams["Chat"] = ai_events()[:-1]
    response = await api.post("/api/ai/chat", json={"message": "hi"}, headers=caller)
    error_shape(response, 502, "bad_gateway")


async def test_search_forwards_and_shapes_hits(
    api: Any, fake_ai: Any, caller: dict[str, str]
) -> None:
    metadata = Struct()
    metadata.update({"source": "wiki", "tags": ["a"]})
    fake_ai.answers["Search"] = ai_pb2.SearchResponse(
        hits=[
            ai_pb2.SearchHit(
                id="d1", namespace="knowledge", score=0.5, text="Doji...", metadata=metadata
            )
        ],
        summary="A doji [1].",
        usage=ai_pb2.Usage(total_tokens=9, model="m"),
    )
    response = await api.post("/api/ai/search", json={"query": "doji"}, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "hits": [
            {
                "id": "d1",
                "namespace": "knowledge",
                "score": 0.5,
                "text": "Doji...",
                "metadata": {"source": "wiki", "tags": ["a"]},
            }
        ],
        "summary": "A doji [1].",
        "usage": {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 9,
            "cost_usd": 0.0,
            "latency_ms": 0,
            "first_token_ms": 0,
            "cached": False,
            "model": "m",
        },
    }
    (call,) = fake_ai.calls_to("Search")
    assert call.request == ai_pb2.SearchRequest(query="doji", namespace="knowledge", limit=5)
    fake_ai.answers["Search"] = ai_pb2.SearchResponse()
    response = await api.post(
        "/api/ai/search",
        json={"query": "x", "namespace": "memories", "limit": 20, "no_summary": True},
        headers=caller,
    )
    assert response.json() == {"hits": [], "summary": "", "usage": None}
    assert fake_ai.calls_to("Search")[1].request == ai_pb2.SearchRequest(
        query="x", namespace="memories", limit=20, no_summary=True
    )


# -- modes, jobs, conversations, usage -------------------------------------------------------------
async def test_modes_are_read_and_set(api: Any, fake_ai: Any, caller: dict[str, str]) -> None:
    fake_ai.answers["GetMode"] = ai_pb2.GetModeResponse(
        mode="fast",
        modes=[
            ai_pb2.ModeInfo(name="fast", description="quick", model="m", rag=False),
            ai_pb2.ModeInfo(name="learn", description="teach", model="m", rag=True),
        ],
    )
    fake_ai.answers["SetMode"] = ai_pb2.SetModeResponse(mode="learn")
    got = await api.get("/api/ai/mode", headers=caller)
    assert got.json() == {
        "mode": "fast",
        "modes": [
            {"name": "fast", "description": "quick", "model": "m", "rag": False},
            {"name": "learn", "description": "teach", "model": "m", "rag": True},
        ],
    }
    put = await api.post("/api/ai/mode", json={"mode": "learn"}, headers=caller)
    assert put.status_code == 200
    assert put.json() == {"mode": "learn"}
    assert fake_ai.calls_to("SetMode")[0].request.mode == "learn"


async def test_generate_queues_a_job_or_answers_now(
    api: Any, fake_ai: Any, caller: dict[str, str]
) -> None:
    fake_ai.answers["SubmitJob"] = ai_pb2.SubmitJobResponse(
        job=ai_pb2.Job(job_id=JOB_ID, status=ai_pb2.JOB_STATUS_QUEUED, created_at=ts())
    )
    queued = await api.post(
        "/api/ai/generate", params={"async": "true"}, json={"message": "later"}, headers=caller
    )
    assert queued.status_code == 202, queued.text
    assert queued.json() == {"job_id": JOB_ID, "status": "queued"}
    assert queued.headers["location"] == f"/api/ai/jobs/{JOB_ID}"
    assert fake_ai.calls_to("SubmitJob")[0].request.request.message == "later"
    now = await api.post("/api/ai/generate", json={"message": "now"}, headers=caller)
    assert now.status_code == 200, now.text
    assert now.json() == ANSWER_OUT
    assert fake_ai.calls_to("ChatWhole")[0].request.request.message == "now"


async def test_a_job_is_read_by_its_id(api: Any, fake_ai: Any, caller: dict[str, str]) -> None:
    fake_ai.answers["GetJob"] = ai_pb2.GetJobResponse(
        job=ai_pb2.Job(
            job_id=JOB_ID,
            status=ai_pb2.JOB_STATUS_SUCCEEDED,
            created_at=ts(5),
            finished_at=ts(9),
            answer="done",
            usage=ai_pb2.Usage(total_tokens=3, model="m"),
            conversation_id="conv-9",
        )
    )
    response = await api.get(f"/api/ai/jobs/{JOB_ID}", headers=caller)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "job_id": JOB_ID,
        "status": "succeeded",
        "created_at": "2025-01-02T03:04:05.678901Z",
        "finished_at": "2025-01-02T03:04:09.678901Z",
        "answer": "done",
        "usage": body["usage"],
        "conversation_id": "conv-9",
        "error": None,
    }
    assert body["usage"]["total_tokens"] == 3
    assert fake_ai.calls_to("GetJob")[0].request.job_id == JOB_ID
    fake_ai.answers["GetJob"] = ai_pb2.GetJobResponse(
        job=ai_pb2.Job(job_id=JOB_ID, status=ai_pb2.JOB_STATUS_FAILED, error="model failed")
    )
    failed = (await api.get(f"/api/ai/jobs/{JOB_ID}", headers=caller)).json()
    assert (failed["status"], failed["error"], failed["answer"], failed["usage"]) == (
        "failed",
        "model failed",
        None,
        None,
    )


async def test_conversations_are_listed_read_and_deleted(
    api: Any, fake_ai: Any, caller: dict[str, str]
) -> None:
    conversation = ai_pb2.Conversation(
        conversation_id="conv-1",
        title="Candles",
        mode="learn",
        created_at=ts(1),
        updated_at=ts(2),
        message_count=4,
    )
    conversation_out = {
        "conversation_id": "conv-1",
        "title": "Candles",
        "mode": "learn",
        "created_at": "2025-01-02T03:04:01.678901Z",
        "updated_at": "2025-01-02T03:04:02.678901Z",
        "message_count": 4,
    }
    fake_ai.answers["ListConversations"] = ai_pb2.ListConversationsResponse(
        conversations=[conversation]
    )
    fake_ai.answers["GetConversation"] = ai_pb2.GetConversationResponse(
        conversation=conversation,
        messages=[
            ai_pb2.ConversationMessage(role="user", content="hi", created_at=ts(1)),
            ai_pb2.ConversationMessage(role="assistant", content="yo", mode="learn", model="m"),
        ],
    )
    page = await api.get(
        "/api/ai/conversations",
        params={"limit": 1, "before": "2025-02-01T00:00:00+01:00"},
        headers=caller,
    )
    assert page.status_code == 200, page.text
    # A full page: the last update time is the cursor for the next one.
    assert page.json() == {
        "conversations": [conversation_out],
        "next_before": "2025-01-02T03:04:02.678901Z",
    }
    (call,) = fake_ai.calls_to("ListConversations")
    assert call.request.limit == 1
    assert call.request.before.ToDatetime() == datetime(2025, 1, 31, 23, 0)
    last = await api.get("/api/ai/conversations", headers=caller)
    assert last.json()["next_before"] is None
    assert fake_ai.calls_to("ListConversations")[1].request.limit == 20

    detail = await api.get("/api/ai/conversations/conv-1", headers=caller)
    assert detail.json() == {
        "conversation": conversation_out,
        "messages": [
            {
                "role": "user",
                "content": "hi",
                "mode": "",
                "model": "",
                "created_at": "2025-01-02T03:04:01.678901Z",
            },
            {
                "role": "assistant",
                "content": "yo",
                "mode": "learn",
                "model": "m",
                "created_at": None,
            },
        ],
    }
    deleted = await api.delete("/api/ai/conversations/conv-1", headers=caller)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert fake_ai.calls_to("DeleteConversation")[0].request.conversation_id == "conv-1"


async def test_usage_is_the_callers(api: Any, fake_ai: Any, caller: dict[str, str]) -> None:
    fake_ai.answers["GetUsage"] = ai_pb2.GetUsageResponse(
        days=[
            ai_pb2.UsageDay(
                day="2025-01-02",
                model="m",
                requests=3,
                prompt_tokens=30,
                completion_tokens=60,
                cost_usd=0.5,
                cached_requests=1,
            )
        ],
        prompt_tokens=30,
        completion_tokens=60,
        cost_usd=0.5,
        requests=3,
    )
    response = await api.get("/api/ai/usage", params={"days": 7}, headers=caller)
    assert response.json() == {
        "days": [
            {
                "day": "2025-01-02",
                "model": "m",
                "requests": 3,
                "prompt_tokens": 30,
                "completion_tokens": 60,
                "cost_usd": 0.5,
                "cached_requests": 1,
            }
        ],
        "prompt_tokens": 30,
        "completion_tokens": 60,
        "cost_usd": 0.5,
        "requests": 3,
    }
    assert fake_ai.calls_to("GetUsage")[0].request.days == 7
    await api.get("/api/ai/usage", headers=caller)
    assert fake_ai.calls_to("GetUsage")[1].request.days == 30


# -- admin ---------------------------------------------------------------------------------------
async def test_admin_routes_answer_an_admin(api: Any, fake_ai: Any, admin: dict[str, str]) -> None:
    fake_ai.answers["GetPerformance"] = ai_pb2.GetPerformanceResponse(
        requests=10,
        latency_p50_ms=100.0,
        latency_p95_ms=400.0,
        cache_hit_rate=0.5,
        prompt_tokens=100,
        completion_tokens=200,
        cost_usd=1.5,
        models=[ai_pb2.ModelPerformance(model="m", requests=10, latency_p50_ms=100.0)],
        queue_depth=2,
        in_flight=1,
        max_concurrency=4,
        cache_l1_entries=7,
        cache_l1_bytes=4096,
    )
    fake_ai.answers["InvalidateCache"] = ai_pb2.InvalidateCacheResponse(removed=3)
    response = await api.get(
        "/api/ai/admin/performance", params={"window_minutes": 15}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "requests": 10,
        "latency_p50_ms": 100.0,
        "latency_p95_ms": 400.0,
        "cache_hit_rate": 0.5,
        "prompt_tokens": 100,
        "completion_tokens": 200,
        "cost_usd": 1.5,
        "models": [
            {
                "model": "m",
                "requests": 10,
                "latency_p50_ms": 100.0,
                "latency_p95_ms": 0.0,
                "first_token_p50_ms": 0.0,
                "first_token_p95_ms": 0.0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0.0,
                "cache_hit_rate": 0.0,
            }
        ],
        "queue_depth": 2,
        "in_flight": 1,
        "max_concurrency": 4,
        "cache_l1_entries": 7,
        "cache_l1_bytes": 4096,
    }
    assert fake_ai.calls_to("GetPerformance")[0].request.window_minutes == 15
    invalidated = await api.post(
        "/api/ai/admin/cache/invalidate", json={"mode": "fast"}, headers=admin
    )
    assert invalidated.json() == {"removed": 3}
    everything = await api.post("/api/ai/admin/cache/invalidate", headers=admin)
    assert everything.status_code == 200, everything.text
    assert [c.request.mode for c in fake_ai.calls_to("InvalidateCache")] == ["fast", ""]


async def test_the_ai_admin_permission_is_enough(
    api: Any, fake_ai: Any, token: Callable[..., str]
) -> None:
    holder = {"Authorization": f"Bearer {token(plan='premium', perms=['ai:admin'])}"}
    response = await api.get("/api/ai/admin/performance", headers=holder)
    assert response.status_code == 200, response.text


async def test_admin_routes_refuse_a_free_user(
    api: Any, fake_ai: Any, caller: dict[str, str], error_shape: Any
) -> None:
    detail = error_shape(
        await api.get("/api/ai/admin/performance", headers=caller), 403, "forbidden"
    )
    assert "ai:admin" in detail
    error_shape(await api.post("/api/ai/admin/cache/invalidate", headers=caller), 403)
    assert not fake_ai.calls


# -- bad input, errors, auth -----------------------------------------------------------------------
def _bar(**overrides: Any) -> dict[str, Any]:
    return bars(1)[0] | overrides


@pytest.mark.parametrize(
    ("method", "path", "body", "params"),
    [
        ("post", "/api/ai/chat", {"message": ""}, None),
        ("post", "/api/ai/chat", {"message": "   "}, None),
        ("post", "/api/ai/chat", {"message": "x" * 8_001}, None),
        ("post", "/api/ai/chat", {}, None),
        ("post", "/api/ai/chat", {"message": "hi", "temperature": 2}, None),
        ("post", "/api/ai/chat", {"message": 5}, None),
        ("post", "/api/ai/chat", {"message": "hi", "mode": "Fast Mode"}, None),
        ("post", "/api/ai/chat", {"message": "hi", "agents": ["fast"]}, None),
        ("post", "/api/ai/chat", {"message": "hi", "agents": ["fast", "fast"]}, None),
        ("post", "/api/ai/chat", {"message": "hi", "agents": ["a", "b", "c", "d", "e"]}, None),
        ("post", "/api/ai/chat", {"message": "hi", "conversation_id": "a b"}, None),
        ("post", "/api/ai/chat/stream", {"message": ""}, None),
        ("post", "/api/ai/generate", {"message": "hi", "extra": 1}, {"async": "true"}),
        ("post", "/api/ai/analyze", {"symbol": "AAPL", "bars": bars(1)}, None),
        ("post", "/api/ai/analyze", {"symbol": "AAPL", "bars": [_bar()] * 2}, None),
        ("post", "/api/ai/analyze", {"symbol": "AAPL", "bars": [*bars(1), _bar(high=1)]}, None),
        ("post", "/api/ai/analyze", {"symbol": "AAPL", "bars": [*bars(2)[1:], *bars(1)]}, None),
        (
            "post",
            "/api/ai/analyze",
            {"symbol": "AAPL", "bars": [_bar(time="2025-01-01T00:00:00"), *bars(3)[1:]]},
            None,
        ),
        ("post", "/api/ai/analyze", {"symbol": "AAPL", "bars": [_bar(time=1), *bars(3)[1:]]}, None),
        (
            "post",
            "/api/ai/analyze",
            {"symbol": "AAPL", "bars": [_bar(volume=-1), *bars(3)[1:]]},
            None,
        ),
        ("post", "/api/ai/analyze", {"symbol": "NOT A SYMBOL", "bars": bars(2)}, None),
        (
            "post",
            "/api/ai/analyze",
            {"symbol": "AAPL", "bars": bars(2), "question": "x" * 2001},
            None,
        ),
        ("post", "/api/ai/search", {"query": ""}, None),
        ("post", "/api/ai/search", {"query": "x", "limit": 0}, None),
        ("post", "/api/ai/search", {"query": "x", "namespace": "chat"}, None),
        ("post", "/api/ai/mode", {"mode": ""}, None),
        ("get", "/api/ai/jobs/not-a-uuid", None, None),
        ("get", "/api/ai/conversations", None, {"limit": 0}),
        ("get", "/api/ai/conversations", None, {"before": "2025-01-01T00:00:00"}),
        ("get", "/api/ai/usage", None, {"days": 367}),
    ],
)
async def test_bad_input_is_a_400_before_any_call(
    api: Any,
    fake_ai: Any,
    caller: dict[str, str],
    error_shape: Any,
    method: str,
    path: str,
    body: Any,
    params: Any,
) -> None:
    response = await api.request(method.upper(), path, json=body, params=params, headers=caller)
    error_shape(response, 400, "validation")
    assert not fake_ai.calls


async def test_a_validation_error_names_the_field(
    api: Any, caller: dict[str, str], error_shape: Any
) -> None:
    detail = error_shape(
        await api.post("/api/ai/chat", json={"message": "hi", "temperature": 2}, headers=caller),
        400,
    )
    assert "temperature" in detail
    detail = error_shape(
        await api.post(
            "/api/ai/analyze",
            json={"symbol": "AAPL", "bars": [*bars(1), _bar(high=1)]},
            headers=caller,
        ),
        400,
    )
    assert "high" in detail


async def test_ai_errors_keep_their_meaning(
    api: Any, fake_ai: Any, caller: dict[str, str], error_shape: Any
) -> None:
    fake_ai.answers["GetJob"] = errors.NotFound("job not found")
    error_shape(await api.get(f"/api/ai/jobs/{JOB_ID}", headers=caller), 404, "not_found")
    fake_ai.answers["SetMode"] = errors.ValidationFailed("unknown mode 'nope'")
    detail = error_shape(
        await api.post("/api/ai/mode", json={"mode": "nope"}, headers=caller), 400, "validation"
    )
    assert "unknown mode" in detail
    fake_ai.streams["Chat"] = errors.ValidationFailed("unknown model 'x'")
    error_shape(await api.post("/api/ai/chat", json={"message": "hi"}, headers=caller), 400)


async def test_a_whole_answer_has_an_answers_deadline_not_a_unary_calls(
    start_gateway: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any, error_shape: Any
) -> None:
    api = await start_gateway(
        ai_grpc_target=fake_ai.address, ai_timeout_s=0.2, ai_stream_timeout_s=1.0
    )

    async def slow(request: Any) -> Any:
        await asyncio.sleep(0.5)  # past the unary deadline, within the answer's
        for event in ai_events():
            yield event

    fake_ai.streams["Chat"] = slow
    response = await api.post("/api/ai/chat", json={"message": "hi"}, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == ANSWER_OUT
    # Other unary calls keep the short one.
    fake_ai.answers["Search"] = lambda request: asyncio.sleep(0.5, ai_pb2.SearchResponse())
    error_shape(await api.post("/api/ai/search", json={"query": "x"}, headers=caller), 504)


async def test_ai_busy_is_a_503_with_retry_after(
    api: Any, fake_ai: Any, caller: dict[str, str], error_shape: Any
) -> None:
    fake_ai.streams["Chat"] = errors.Unavailable("every model slot is busy", code="ai_busy")
    response = await api.post("/api/ai/chat", json={"message": "hi"}, headers=caller)
    error_shape(response, 503, "ai_busy")
    assert response.headers["retry-after"] == "2"  # GATEWAY_AI_BUSY_RETRY_AFTER_S
    # The service's own hint wins.
    fake_ai.answers["Search"] = errors.Unavailable("busy", code="ai_busy", retry_after=7)
    response = await api.post("/api/ai/search", json={"query": "x"}, headers=caller)
    error_shape(response, 503, "ai_busy")
    assert response.headers["retry-after"] == "7"


async def test_a_failure_mid_answer_fails_the_whole_answer(
    api: Any, fake_ai: Any, caller: dict[str, str], ai_events: Any, error_shape: Any
) -> None:
    events = ai_events()
    fake_ai.streams["Chat"] = [*events[:2], errors.Unavailable("model crashed", code="ai_busy")]
    error_shape(await api.post("/api/ai/chat", json={"message": "hi"}, headers=caller), 503)


async def test_ai_routes_need_a_caller(
    api: Any, fake_ai: Any, error_shape: Any, new_key: Any, mint_token: Any
) -> None:
    error_shape(await api.post("/api/ai/chat", json={"message": "hi"}), 401)
    forged = {"Authorization": f"Bearer {mint_token(new_key())}"}
    error_shape(await api.post("/api/ai/chat", json={"message": "hi"}, headers=forged), 401)
    error_shape(await api.get("/api/ai/admin/performance"), 401)
    error_shape(await api.post("/api/ai/chat/stream", json={"message": "hi"}), 401)
    assert not fake_ai.calls


async def test_without_ai_configured_routes_answer_503(
    start_gateway: Any, caller: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway()
    error_shape(
        await api.post("/api/ai/chat", json={"message": "hi"}, headers=caller),
        503,
        "ai_not_configured",
    )
    error_shape(await api.get("/api/ai/mode", headers=caller), 503, "ai_not_configured")
    status = await api.get("/api/status")
    assert "ai" not in status.json()["dependencies"]


async def test_status_reports_ai_health(
    start_gateway: Any, fake_ai: Any, caller: dict[str, str], error_shape: Any
) -> None:
    up = await start_gateway(ai_grpc_target=fake_ai.address)
    assert (await up.get("/api/status")).json()["dependencies"]["ai"]["ok"] is True
    down = await start_gateway(ai_grpc_target="127.0.0.1:1")
    error_shape(await down.get("/api/ai/mode", headers=caller), 503, "unavailable")
    status = await down.get("/api/status")
    assert status.status_code == 503
    assert status.json()["dependencies"]["ai"]["ok"] is False
