"""Chat against the real local model: the stream, usage, conversations, modes, auto routing,
multi-agent answers, and the request queue."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc

from aether.ai.v1 import ai_pb2


async def test_an_answer_streams_in_order_and_ends_with_done_and_usage(ai: Any, kit: Any) -> None:
    user = ai.user()
    events = await ai.chat(user, "What is a stock?", mode="fast")

    kinds = kit.kinds(events)
    assert kinds[0] == "started"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"chunk"}  # no RAG in fast mode: no Sources event
    started, done = events[0].started, events[-1].done
    assert started.mode == "fast"
    assert started.model == "small"
    assert not started.cached
    uuid.UUID(started.request_id)
    uuid.UUID(started.conversation_id)
    assert done.answer == kit.text_of(events)
    assert done.answer.strip()
    assert done.finish_reason in ("stop", "length")
    usage = done.usage
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.cost_usd > 0
    assert usage.model == "small"
    assert not usage.cached
    assert usage.latency_ms >= usage.first_token_ms > 0

    # Recorded before Done: the usage and the conversation are there already.
    daily = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=ai.auth(user))
    assert daily.requests == 1
    assert daily.prompt_tokens == usage.prompt_tokens
    assert daily.completion_tokens == usage.completion_tokens
    conversation = await ai.stub.GetConversation(
        ai_pb2.GetConversationRequest(conversation_id=started.conversation_id),
        metadata=ai.auth(user),
    )
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "What is a stock?"),
        ("assistant", done.answer),
    ]
    assert conversation.conversation.title == "What is a stock?"


async def test_a_conversation_carries_its_history_and_stays_its_owners(ai: Any, kit: Any) -> None:
    user, other = ai.user(), ai.user("other")
    first = await ai.chat(user, "My favourite ticker is AAPL.", mode="fast")
    conversation_id = first[0].started.conversation_id

    second = await ai.chat(
        user, "Which ticker did I name?", mode="fast", conversation_id=conversation_id
    )
    assert second[0].started.conversation_id == conversation_id
    listed = await ai.stub.ListConversations(
        ai_pb2.ListConversationsRequest(), metadata=ai.auth(user)
    )
    assert [c.conversation_id for c in listed.conversations] == [conversation_id]
    assert listed.conversations[0].message_count == 4

    # The history went into the prompt: the second prompt is longer than the first.
    assert second[-1].done.usage.prompt_tokens > first[-1].done.usage.prompt_tokens

    error = await kit.stream_failure(
        ai.stub.Chat(
            ai_pb2.ChatRequest(message="hi", conversation_id=conversation_id),
            metadata=ai.auth(other),
        )
    )
    assert error.grpc_code is grpc.StatusCode.NOT_FOUND
    error = await kit.failure(
        ai.stub.GetConversation(
            ai_pb2.GetConversationRequest(conversation_id=conversation_id),
            metadata=ai.auth(other),
        )
    )
    assert error.grpc_code is grpc.StatusCode.NOT_FOUND

    await ai.stub.DeleteConversation(
        ai_pb2.DeleteConversationRequest(conversation_id=conversation_id), metadata=ai.auth(user)
    )
    listed = await ai.stub.ListConversations(
        ai_pb2.ListConversationsRequest(), metadata=ai.auth(user)
    )
    assert list(listed.conversations) == []


async def test_modes_default_per_user_and_the_mode_list(ai: Any, kit: Any) -> None:
    user = ai.user()
    modes = await ai.stub.GetMode(ai_pb2.GetModeRequest(), metadata=ai.auth(user))
    assert modes.mode == "fast"
    names = [m.name for m in modes.modes]
    assert names[0] == "auto"
    assert set(names) == {
        "auto",
        "fast",
        "deep_thinking",
        "trade_buddy",
        "stock_analysis",
        "web_search",
        "learn",
        "normal_search",
    }
    web = next(m for m in modes.modes if m.name == "web_search")
    assert web.rag
    assert "knowledge" in web.description

    chosen = await ai.stub.SetMode(ai_pb2.SetModeRequest(mode="learn"), metadata=ai.auth(user))
    assert chosen.mode == "learn"
    assert (await ai.stub.GetMode(ai_pb2.GetModeRequest(), metadata=ai.auth(user))).mode == "learn"
    events = await ai.chat(user, "What is a dividend?")  # mode "": the caller's default
    assert events[0].started.mode == "learn"

    error = await kit.failure(
        ai.stub.SetMode(ai_pb2.SetModeRequest(mode="telepathy"), metadata=ai.auth(user))
    )
    assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
    assert "telepathy" in error.detail


async def test_auto_routes_simple_questions_to_fast_and_hard_ones_to_deep_thinking(
    ai: Any, kit: Any
) -> None:
    user = ai.user()
    routed = kit.metric("aether_ai_auto_routed_total", mode="deep_thinking")

    simple = await ai.chat(user, "Hi, what is a bond?", mode="auto")
    hard = await ai.chat(
        user,
        "Compare the risk of a 60/40 portfolio with 100% equities over 10 years. "
        "Why does diversification help, and what are the trade-offs?",
        mode="auto",
    )

    assert (simple[0].started.mode, simple[0].started.model) == ("fast", "small")
    assert (hard[0].started.mode, hard[0].started.model) == ("deep_thinking", "large")
    assert hard[-1].done.usage.model == "large"
    assert kit.metric("aether_ai_auto_routed_total", mode="deep_thinking") == routed + 1


async def test_multi_agent_answers_merge_each_agents_part(ai: Any, kit: Any) -> None:
    user = ai.user()
    events = await ai.chat(user, "Explain what a stop-loss order is.", agents=["fast", "learn"])

    started, done = events[0].started, events[-1].done
    assert list(started.agents) == ["fast", "learn"]
    assert started.mode == "multi_agent"
    chunk_agents = {e.chunk.agent for e in events if e.WhichOneof("event") == "chunk"}
    assert chunk_agents == {"fast", "learn"}
    assert [p.agent for p in done.parts] == ["fast", "learn"]
    for part in done.parts:
        assert part.content == kit.text_of(events, part.agent)
        assert part.model == "small"
        assert part.usage.prompt_tokens > 0
        # Both parts run at once: the local server must finish each (--interrupt_requests False).
        assert part.usage.completion_tokens > 0, part
        assert part.content.strip(), part
    # Each part under its heading, in request order.
    assert done.answer.index("### fast\n") < done.answer.index("### learn\n")
    for part in done.parts:
        assert part.content.strip() in done.answer
    assert done.usage.completion_tokens == sum(p.usage.completion_tokens for p in done.parts)
    assert done.usage.cost_usd == sum(p.usage.cost_usd for p in done.parts)
    usage = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=ai.auth(user))
    assert usage.requests == 2  # one row per agent


async def test_chat_whole_gives_the_streamed_answer_in_one_response_and_records(
    ai: Any,
) -> None:
    user = ai.user()
    streamed = await ai.chat(user, "What is a bond?", mode="fast")
    # The same question again, whole: the cached answer.
    whole = await ai.chat_whole(user, "What is a bond?", mode="fast")
    assert whole.started.cached
    assert whole.started.conversation_id
    assert whole.done.answer == streamed[-1].done.answer

    fresh = await ai.chat_whole(user, "What is a dividend?", mode="fast", no_cache=True)
    assert not fresh.started.cached
    assert fresh.done.answer.strip()
    assert fresh.done.usage.completion_tokens > 0

    merged = await ai.chat_whole(user, "What is a share split?", agents=["fast", "learn"])
    assert [p.agent for p in merged.done.parts] == ["fast", "learn"]

    usage = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=ai.auth(user))
    assert usage.requests == 5  # each recorded: streamed, cached, fresh, one row per agent
    listed = await ai.stub.ListConversations(
        ai_pb2.ListConversationsRequest(), metadata=ai.auth(user)
    )
    assert sorted(c.message_count for c in listed.conversations) == [2, 2, 2, 2]


async def test_chat_whole_refuses_bad_input_like_chat(ai: Any, kit: Any) -> None:
    error = await kit.failure(ai.chat_whole(ai.user(), "   "))
    assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
    assert "message" in error.detail
    error = await kit.failure(ai.chat_whole(ai.user(), "hi", mode="telepathy"))
    assert "telepathy" in error.detail


async def test_deltas_that_arrive_close_together_share_a_chunk(start_ai: Any, kit: Any) -> None:
    prompt = "Write a long essay on the history of stock market number 1."
    modes = {"fast": {"max_tokens": 20, "temperature": 0}}  # runs to max_tokens
    each = await start_ai(stream_coalesce_ms=0, modes=modes)
    one_by_one = await each.chat(each.user(), prompt, mode="fast", no_cache=True)
    chunks = [e for e in one_by_one if e.WhichOneof("event") == "chunk"]
    assert len(chunks) == one_by_one[-1].done.usage.completion_tokens == 20

    joined = await start_ai(stream_coalesce_ms=1000, modes=modes)
    together = await joined.chat(joined.user(), prompt, mode="fast", no_cache=True)
    # The first delta at once, then the rest within the second: one more chunk at the end.
    assert kit.kinds(together) == ["started", "chunk", "chunk", "done"]
    assert together[-1].done.answer == kit.text_of(together) == one_by_one[-1].done.answer
    assert together[-1].done.usage.completion_tokens == 20  # still counted per delta


async def test_bad_input_is_invalid_argument_with_a_message(ai: Any, kit: Any) -> None:
    user = ai.user()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"message": "   "}, "empty"),
        ({"message": "x" * 8001}, "8000"),
        ({"message": "hi", "mode": "telepathy"}, "unknown mode"),
        ({"message": "hi", "model": "gpt-99"}, "unknown model"),
        ({"message": "hi", "agents": ["fast"]}, "2-4"),
        (
            {
                "message": "hi",
                "agents": ["fast", "learn", "web_search", "trade_buddy", "deep_thinking"],
            },
            "2-4",
        ),
        ({"message": "hi", "agents": ["fast", "fast"]}, "distinct"),
        ({"message": "hi", "agents": ["fast", "auto"]}, "unknown agent"),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, "UUID"),
    ]
    for fields, words in cases:
        error = await kit.stream_failure(
            ai.stub.Chat(ai_pb2.ChatRequest(**fields), metadata=ai.auth(user))
        )
        assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT, fields
        assert words in error.detail, (fields, error.detail)

    error = await kit.failure(
        ai.stub.GetJob(ai_pb2.GetJobRequest(job_id="42"), metadata=ai.auth(user))
    )
    assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
    assert "UUID" in error.detail
    for days in (-1, 367):
        error = await kit.failure(
            ai.stub.GetUsage(ai_pb2.GetUsageRequest(days=days), metadata=ai.auth(user))
        )
        assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT


async def test_calls_without_a_token_are_unauthenticated(ai: Any, kit: Any) -> None:
    error = await kit.stream_failure(ai.stub.Chat(ai_pb2.ChatRequest(message="hi")))
    assert error.grpc_code is grpc.StatusCode.UNAUTHENTICATED
    error = await kit.failure(ai.stub.GetMode(ai_pb2.GetModeRequest()))
    assert error.grpc_code is grpc.StatusCode.UNAUTHENTICATED
    error = await kit.stream_failure(
        ai.stub.Chat(
            ai_pb2.ChatRequest(message="hi"), metadata=(("authorization", "Bearer forged"),)
        )
    )
    assert error.grpc_code is grpc.StatusCode.UNAUTHENTICATED


async def test_cancelling_mid_stream_stops_the_generation_and_frees_the_slot(
    start_ai: Any, kit: Any
) -> None:
    # One slot: the next request can only run if the cancelled one gave its slot back.
    ai = await start_ai(max_concurrency=1, queue_timeout_s=20, modes={"fast": {"max_tokens": 400}})
    user = ai.user()
    cancelled = kit.metric("aether_ai_generations_cancelled_total")

    call = ai.stub.Chat(
        ai_pb2.ChatRequest(message="Write a long essay about markets.", mode="fast"),
        metadata=ai.auth(user),
    )
    seen = []
    async for event in call:
        seen.append(event.WhichOneof("event"))
        if seen.count("chunk") == 2:
            break
    assert ai.app.slots.in_flight == 1
    call.cancel()

    # At once, not when the garbage collector gets to the abandoned generators.
    await kit.eventually(lambda: ai.app.slots.in_flight == 0, within=1.0)
    await kit.eventually(
        lambda: kit.metric("aether_ai_generations_cancelled_total") == cancelled + 1, within=1.0
    )
    assert kit.metric("aether_ai_in_flight") == 0
    # The slot is reusable, and the abandoned answer left no usage row behind.
    events = await ai.chat(user, "Say hello.", mode="fast", no_cache=True)
    assert events[-1].WhichOneof("event") == "done"
    conn = await asyncpg.connect(ai.settings.database_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM ai_requests WHERE user_id = $1", user)
    finally:
        await conn.close()
    assert rows == 1


async def test_the_sixth_concurrent_call_waits_then_fails_ai_busy(start_ai: Any, kit: Any) -> None:
    # Greedy decoding (temperature 0) of these prompts runs to max_tokens (checked against the
    # local model): a short answer could end within the sixth call's wait and free a slot.
    ai = await start_ai(
        max_concurrency=5,
        queue_timeout_s=0.5,
        modes={"fast": {"max_tokens": 300, "temperature": 0}},
    )
    user = ai.user()
    rejected = kit.metric("aether_ai_queue_rejected_total")
    calls = [
        ai.stub.Chat(
            ai_pb2.ChatRequest(
                message=f"Write a long essay on the history of stock market number {n + 1}.",
                mode="fast",
                no_cache=True,
            ),
            metadata=ai.auth(user),
        )
        for n in range(5)
    ]
    try:
        # Started is sent once the call holds its slot.
        firsts = await asyncio.gather(*(call.read() for call in calls))
        assert all(first.WhichOneof("event") == "started" for first in firsts)
        assert ai.app.slots.in_flight == 5

        error = await kit.stream_failure(
            ai.stub.Chat(
                ai_pb2.ChatRequest(message="And me?", mode="fast", no_cache=True),
                metadata=ai.auth(user),
            )
        )
        assert error.grpc_code is grpc.StatusCode.UNAVAILABLE
        assert error.error_code == "ai_busy"
        assert "busy" in error.detail
        assert "5 model slots" in error.detail
        assert error.retry_after is not None
        assert kit.metric("aether_ai_queue_rejected_total") == rejected + 1
    finally:
        for call in calls:
            call.cancel()
    # At once, not when the garbage collector gets to the abandoned generators.
    await kit.eventually(lambda: ai.app.slots.in_flight == 0, within=1.0)


async def test_an_answer_past_its_latency_budget_ends_there_and_is_not_cached(
    start_ai: Any, kit: Any
) -> None:
    # No model reads a prompt in a millisecond: the budget always runs out here.
    ai = await start_ai(modes={"fast": {"latency_budget_s": 0.001, "max_tokens": 200}})
    user = ai.user()
    cut = kit.metric("aether_ai_latency_budget_exceeded_total", mode="fast")

    events = await ai.chat(user, "Describe the stock market.", mode="fast")

    done = events[-1].done
    assert done.finish_reason == "length"
    assert kit.metric("aether_ai_latency_budget_exceeded_total", mode="fast") == cut + 1
    again = await ai.chat(user, "Describe the stock market.", mode="fast")
    assert not again[0].started.cached
