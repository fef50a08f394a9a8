"""The response cache end to end: L1 and L2 hits without a model call, replicas sharing L2,
personal context never shared across users, invalidation of both levels on every replica."""

from __future__ import annotations

from typing import Any

import grpc

from aether.ai.v1 import ai_pb2


async def test_a_second_identical_request_is_a_cache_hit_without_a_model_call(
    ai: Any, kit: Any
) -> None:
    user = ai.user()
    first = await ai.chat(user, "What is a stock split?", mode="fast")
    calls = ai.app.llm.calls
    l1_hits = kit.metric("aether_ai_cache_lookups_total", level="l1", outcome="hit")

    # Same question, other spacing and case: the normalised prompt is the same.
    second = await ai.chat(user, "  what is a   STOCK split? ", mode="fast")

    assert ai.app.llm.calls == calls  # no model call
    assert kit.metric("aether_ai_cache_lookups_total", level="l1", outcome="hit") == l1_hits + 1
    started, done = second[0].started, second[-1].done
    assert started.cached
    assert kit.kinds(second)[-1] == "done"
    assert kit.kinds(second).count("chunk") >= 1  # streamed like a fresh answer
    assert done.answer == first[-1].done.answer == kit.text_of(second)
    assert done.finish_reason == "cached"
    assert done.usage.cached
    assert done.usage.cost_usd == 0
    usage = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=ai.auth(user))
    assert usage.requests == 2  # cached answers are recorded too
    assert usage.days[0].cached_requests == 1


async def test_no_cache_skips_both_reading_and_writing(ai: Any) -> None:
    user = ai.user()
    await ai.chat(user, "What is a limit order?", mode="fast", no_cache=True)
    again = await ai.chat(user, "What is a limit order?", mode="fast")
    assert not again[0].started.cached  # the first answer was never stored
    calls = ai.app.llm.calls
    forced = await ai.chat(user, "What is a limit order?", mode="fast", no_cache=True)
    assert not forced[0].started.cached
    assert ai.app.llm.calls == calls + 1


async def test_another_replica_answers_from_the_shared_cache(start_ai: Any, kit: Any) -> None:
    one, two = await start_ai(), await start_ai()
    user = one.user()
    first = await one.chat(user, "What is market capitalisation?", mode="fast")
    l2_hits = kit.metric("aether_ai_cache_lookups_total", level="l2", outcome="hit")

    second = await two.chat(user, "What is market capitalisation?", mode="fast")

    assert two.app.llm.calls == 0
    assert second[0].started.cached
    assert second[-1].done.answer == first[-1].done.answer
    assert kit.metric("aether_ai_cache_lookups_total", level="l2", outcome="hit") == l2_hits + 1
    assert len(two.app.cache.l1) == 1  # an L2 hit fills the local level


async def test_answers_with_personal_context_are_never_shared_across_users(
    ai: Any, kit: Any
) -> None:
    alice, bob = ai.user("alice"), ai.user("bob")
    question = "Should I buy more of what I hold?"
    # trade_buddy reads the caller's own "memories": the answer is personal.
    await ai.chat(alice, question, mode="trade_buddy")
    calls = ai.app.llm.calls
    bobs = await ai.chat(bob, question, mode="trade_buddy")
    assert not bobs[0].started.cached
    assert ai.app.llm.calls == calls + 1
    again = await ai.chat(alice, question, mode="trade_buddy")
    assert again[0].started.cached  # still cached for its owner

    # Without personal context the same answer serves everyone.
    await ai.chat(alice, "What is an ETF?", mode="fast")
    shared = await ai.chat(bob, "What is an ETF?", mode="fast")
    assert shared[0].started.cached

    # Conversation history is personal too: a continued conversation is keyed per user.
    first = await ai.chat(alice, "Tell me about bonds.", mode="fast")
    conversation_id = first[0].started.conversation_id
    await ai.chat(alice, "And their risks?", mode="fast", conversation_id=conversation_id)
    calls = ai.app.llm.calls
    fresh = await ai.chat(bob, "And their risks?", mode="fast")
    assert not fresh[0].started.cached  # no history: another prompt, another key
    assert ai.app.llm.calls == calls + 1


async def test_invalidation_clears_the_shared_level_and_every_replicas_local_one(
    start_ai: Any, kit: Any
) -> None:
    one, two = await start_ai(), await start_ai()
    user, admin = one.user(), one.user("admin")
    await one.chat(user, "What is a bear market?", mode="fast")
    await one.chat(user, "What is a dividend?", mode="learn")
    await two.chat(user, "What is a bear market?", mode="fast")  # L2 hit: now in two's L1 too
    assert len(two.app.cache.l1) == 1
    assert len(one.app.cache.l1) == 2

    error = await kit.failure(
        one.stub.InvalidateCache(ai_pb2.InvalidateCacheRequest(), metadata=one.auth(user))
    )
    assert error.grpc_code is grpc.StatusCode.PERMISSION_DENIED

    # One mode: only its entries go, on both replicas.
    removed = await one.stub.InvalidateCache(
        ai_pb2.InvalidateCacheRequest(mode="fast"), metadata=one.admin(admin)
    )
    assert removed.removed == 1
    await kit.eventually(lambda: len(two.app.cache.l1) == 0)
    assert len(one.app.cache.l1) == 1
    calls = two.app.llm.calls
    again = await two.chat(user, "What is a bear market?", mode="fast")
    assert not again[0].started.cached
    assert two.app.llm.calls == calls + 1

    # Everything: both levels, both replicas.
    removed = await two.stub.InvalidateCache(
        ai_pb2.InvalidateCacheRequest(), metadata=two.admin(admin)
    )
    assert removed.removed == 2
    await kit.eventually(lambda: len(one.app.cache.l1) == 0 and len(two.app.cache.l1) == 0)
    learn = await one.chat(user, "What is a dividend?", mode="learn")
    assert not learn[0].started.cached

    error = await kit.failure(
        one.stub.InvalidateCache(
            ai_pb2.InvalidateCacheRequest(mode="telepathy"), metadata=one.admin(admin)
        )
    )
    assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
