"""Usage per user and the admin performance view (admin role or the ai:admin permission)."""

from __future__ import annotations

import datetime
from typing import Any

import grpc

from aether.ai.v1 import ai_pb2


async def test_usage_counts_each_answer_per_day_and_model(ai: Any) -> None:
    user, other = ai.user(), ai.user("other")
    answers = [
        (await ai.chat(user, "What is inflation?", mode="fast"))[-1].done,
        (await ai.chat(user, "What is deflation?", mode="deep_thinking"))[-1].done,
    ]
    await ai.chat(other, "What is a yield curve?", mode="fast")

    usage = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(days=1), metadata=ai.auth(user))

    assert usage.requests == 2
    assert usage.prompt_tokens == sum(a.usage.prompt_tokens for a in answers)
    assert usage.completion_tokens == sum(a.usage.completion_tokens for a in answers)
    assert abs(usage.cost_usd - sum(a.usage.cost_usd for a in answers)) < 1e-9
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    assert {(d.day, d.model, d.requests) for d in usage.days} == {
        (today, "small", 1),
        (today, "large", 1),
    }


async def test_performance_is_for_admins_only(ai: Any, kit: Any) -> None:
    user = ai.user()
    error = await kit.failure(
        ai.stub.GetPerformance(ai_pb2.GetPerformanceRequest(), metadata=ai.auth(user))
    )
    assert error.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    assert "ai:admin" in error.detail
    error = await kit.failure(ai.stub.GetPerformance(ai_pb2.GetPerformanceRequest()))
    assert error.grpc_code is grpc.StatusCode.UNAUTHENTICATED


async def test_performance_shows_the_window_and_this_replicas_live_figures(
    ai: Any, kit: Any
) -> None:
    user = ai.user()
    await ai.chat(user, "What is a hedge fund?", mode="fast")
    await ai.chat(user, "What is a hedge fund?", mode="fast")  # a cache hit

    for metadata in (
        ai.admin(ai.user("admin")),
        ai.auth(ai.user("ops"), perms=["ai:admin"]),  # the permission alone suffices
    ):
        report = await ai.stub.GetPerformance(
            ai_pb2.GetPerformanceRequest(window_minutes=30), metadata=metadata
        )
        assert report.requests == 2
        assert report.cache_hit_rate == 0.5
        assert report.latency_p95_ms >= report.latency_p50_ms > 0
        assert report.prompt_tokens > 0
        assert [m.model for m in report.models] == ["small"]
        assert report.max_concurrency == 5
        assert report.in_flight == 0
        assert report.queue_depth == 0
        assert report.cache_l1_entries == 1
        assert report.cache_l1_bytes > 0

    error = await kit.failure(
        ai.stub.GetPerformance(
            ai_pb2.GetPerformanceRequest(window_minutes=10_081), metadata=ai.admin("admin")
        )
    )
    assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
