"""RAG and Search through a real memory service (MemoryApp in-process, its local embedding model,
Qdrant in local mode), called with the caller's own token."""

from __future__ import annotations

import re
from typing import Any

import grpc

from aether.ai.v1 import ai_pb2

KNOWLEDGE = {
    "kb-rsi": "The relative strength index (RSI) measures the speed of price moves on a 0-100 "
    "scale; above 70 is often called overbought and below 30 oversold.",
    "kb-sma": "A simple moving average (SMA) is the mean closing price over the last N bars; "
    "prices above a rising SMA suggest an uptrend.",
    "kb-bond": "A bond is a loan to a government or company that pays interest until maturity.",
}


async def test_rag_answers_carry_sources_and_a_footer_with_the_retrieved_ids(
    start_ai: Any, memory: Any, kit: Any
) -> None:
    ai = await start_ai(memory_grpc_target=memory.address)
    await memory.upsert("editor", "knowledge", KNOWLEDGE, admin=True)
    user = ai.user()

    events = await ai.chat(user, "What does the RSI indicator measure?", mode="web_search")

    kinds = kit.kinds(events)
    assert kinds[0] == "started"
    assert kinds[-2:] == ["sources", "done"]  # Started, Chunk..., Sources, Done
    sources = events[-2].sources.sources
    assert [s.n for s in sources] == list(range(1, len(sources) + 1))
    assert 1 <= len(sources) <= ai.settings.rag_limit
    assert sources[0].id == "kb-rsi"  # the closest record ranks first
    assert all(s.namespace == "knowledge" for s in sources)
    assert sources[0].text.startswith("The relative strength index")
    assert all(-1 <= s.score <= 1 for s in sources)
    done = events[-1].done
    footer = "Sources: " + " ".join(f"[{s.n}] {s.id}" for s in sources)
    assert done.answer.endswith("\n\n" + footer)
    assert done.answer == kit.text_of(events)  # the footer was streamed too

    # The cached answer keeps its footer, and a hit still reports the sources.
    again = await ai.chat(user, "What does the RSI indicator measure?", mode="web_search")
    assert again[0].started.cached
    assert again[-1].done.answer == done.answer
    assert [s.id for s in again[-2].sources.sources] == [s.id for s in sources]
    whole = await ai.chat_whole(user, "What does the RSI indicator measure?", mode="web_search")
    assert (whole.done.answer, list(whole.sources)) == (done.answer, list(sources))


async def test_memories_are_searched_with_the_callers_own_token(
    start_ai: Any, memory: Any, kit: Any
) -> None:
    ai = await start_ai(memory_grpc_target=memory.address)
    alice, bob = ai.user("alice"), ai.user("bob")
    await memory.upsert(
        alice, "memories", {"note-alice": "I hold 40 shares of NVDA bought at $410."}
    )

    hers = await ai.chat(alice, "What do I hold in NVDA?", mode="trade_buddy")
    his = await ai.chat(bob, "What do I hold in NVDA?", mode="trade_buddy")

    her_sources = [
        s.id for e in hers if e.WhichOneof("event") == "sources" for s in e.sources.sources
    ]
    his_sources = [
        s.id for e in his if e.WhichOneof("event") == "sources" for s in e.sources.sources
    ]
    assert "note-alice" in her_sources
    assert "note-alice" not in his_sources
    assert "note-alice" in hers[-1].done.answer
    assert "note-alice" not in his[-1].done.answer


async def test_memory_down_means_an_answer_without_rag_not_an_error(ai: Any, kit: Any) -> None:
    degraded = sum(
        kit.metric("aether_ai_rag_degraded_total", reason=reason)
        for reason in ("unavailable", "timeout", "internal")
    )
    events = await ai.chat(ai.user(), "What is a bond?", mode="web_search")

    assert kit.kinds(events)[-1] == "done"
    assert "sources" not in kit.kinds(events)
    assert "Sources:" not in events[-1].done.answer
    after = sum(
        kit.metric("aether_ai_rag_degraded_total", reason=reason)
        for reason in ("unavailable", "timeout", "internal")
    )
    assert after == degraded + 1


async def test_search_returns_hits_and_a_summary_that_cites_them(
    start_ai: Any, memory: Any, kit: Any
) -> None:
    ai = await start_ai(memory_grpc_target=memory.address)
    await memory.upsert("editor", "knowledge", KNOWLEDGE, admin=True)
    user = ai.user()

    found = await ai.stub.Search(
        ai_pb2.SearchRequest(query="moving average trend", limit=2), metadata=ai.auth(user)
    )
    assert len(found.hits) == 2
    assert found.hits[0].id == "kb-sma"
    assert found.hits[0].namespace == "knowledge"
    assert found.hits[0].text == KNOWLEDGE["kb-sma"]
    assert found.hits[0].score >= found.hits[1].score
    assert found.summary.endswith(
        "Sources: " + " ".join(f"[{n}] {hit.id}" for n, hit in enumerate(found.hits, start=1))
    )
    assert found.usage.completion_tokens > 0
    assert re.search(r"\[1\]", found.summary)

    bare = await ai.stub.Search(
        ai_pb2.SearchRequest(query="bonds", no_summary=True), metadata=ai.auth(user)
    )
    assert bare.summary == ""
    assert len(bare.hits) == 3  # the default limit (5) caps nothing here
    assert not bare.HasField("usage")

    for request, words in [
        (ai_pb2.SearchRequest(query=""), "query"),
        (ai_pb2.SearchRequest(query="x" * 2001), "2000"),
        (ai_pb2.SearchRequest(query="bonds", namespace="chat"), "namespace"),
        (ai_pb2.SearchRequest(query="bonds", limit=21), "limit"),
    ]:
        error = await kit.failure(ai.stub.Search(request, metadata=ai.auth(user)))
        assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
        assert words in error.detail
