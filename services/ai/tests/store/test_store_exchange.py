"""An answer's write: usage rows, day aggregates, events and turns in one statement."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from aether_ai.conversations import Conversation, Conversations, Turn
from aether_ai.usage import Completion, UsageStore
from aether_common.postgres import PostgresDatabase


def completion(user_id: str, conversation_id: str, **overrides: Any) -> Completion:
    values: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "user_id": user_id,
        "conversation_id": conversation_id,
        "kind": "chat",
        "mode": "fast",
        "model": "smollm2",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cost_usd": 0.25,
        "latency_ms": 500,
        "first_token_ms": 90,
        "cached": False,
    }
    values.update(overrides)
    return Completion(**values)


def new_conversation() -> Conversation:
    return Conversation(str(uuid.uuid4()), [], is_new=True, title="Gold", mode="fast")


QA = [Turn("user", "Why gold?", "fast"), Turn("assistant", "Fear.", "fast", "smollm2")]


async def counts(db: PostgresDatabase, user_id: str) -> dict[str, Any]:
    return dict(
        await db.pool.fetchrow(
            """
            SELECT
                (SELECT count(*) FROM ai_requests WHERE user_id = $1) AS requests,
                (SELECT count(*) FROM event_outbox) AS events,
                (SELECT count(*) FROM ai_conversations WHERE user_id = $1) AS conversations,
                (SELECT count(*) FROM ai_messages m JOIN ai_conversations c
                    ON c.id = m.conversation_id WHERE c.user_id = $1) AS messages
            """,
            user_id,
        )
    )


async def test_a_multi_agent_answer_counts_each_part_once_with_its_turns(
    store_db: PostgresDatabase,
) -> None:
    usage = UsageStore(store_db)
    conversations = Conversations(store_db)
    new = new_conversation()
    parts = [
        completion("ann", new.id, mode="fast"),
        completion("ann", new.id, mode="learn", cached=True, cost_usd=0.0),
        completion("ann", new.id, mode="deep_thinking", model="qwen", prompt_tokens=7),
    ]
    await conversations.append("ann", new, QA, requests=usage.rows(parts))
    # The same parts again (a retried write) with the next turns: the turns are added, the
    # parts neither counted nor published a second time.
    more = [Turn("user", "And silver?", "learn"), Turn("assistant", "Industry.", "learn", "m")]
    await conversations.append("ann", new.id, more, requests=usage.rows(parts))

    assert await counts(store_db, "ann") == {
        "requests": 3,
        "events": 3,
        "conversations": 1,
        "messages": 4,
    }
    daily = {
        r["model"]: dict(r)
        for r in await store_db.pool.fetch(
            "SELECT model, requests, cached_requests, prompt_tokens, completion_tokens, cost_usd "
            "FROM ai_usage_daily WHERE user_id = 'ann'"
        )
    }
    assert daily["smollm2"] == {
        "model": "smollm2",
        "requests": 2,
        "cached_requests": 1,
        "prompt_tokens": 200,
        "completion_tokens": 40,
        "cost_usd": 0.25,
    }
    assert (daily["qwen"]["requests"], daily["qwen"]["prompt_tokens"]) == (1, 7)
    got = await conversations.get("ann", new.id)
    assert got.conversation.message_count == 4
    assert got.conversation.mode == "learn"  # the latest mode used
    assert [m.content for m in got.messages] == ["Why gold?", "Fear.", "And silver?", "Industry."]


async def test_another_users_conversation_gets_no_turns_but_the_usage_counts(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    usage = UsageStore(store_db)
    conversations = Conversations(store_db)
    new = new_conversation()
    await conversations.append("bob", new, QA)

    # The model ran for eve, so her usage counts; bob's conversation is not hers to write.
    spent = usage.rows([completion("eve", new.id)])
    failure = await store_kit.failure(conversations.append("eve", new.id, QA, requests=spent))
    assert failure.code == "not_found"
    assert (await counts(store_db, "eve"))["requests"] == 1
    assert (await counts(store_db, "bob"))["messages"] == 2


async def test_a_refused_statement_writes_nothing_of_the_exchange(
    store_db: PostgresDatabase,
) -> None:
    usage = UsageStore(store_db)
    conversations = Conversations(store_db)
    broken = usage.rows([completion("cid", "", prompt_tokens=-1)])  # breaks a CHECK
    with pytest.raises(asyncpg.CheckViolationError):
        await conversations.append("cid", new_conversation(), QA, requests=broken)
    assert await counts(store_db, "cid") == {
        "requests": 0,
        "events": 0,
        "conversations": 0,
        "messages": 0,
    }


async def test_concurrent_answers_to_one_conversation_keep_each_question_with_its_answer(
    store_db: PostgresDatabase,
) -> None:
    conversations = Conversations(store_db)
    new = new_conversation()
    await conversations.append("dan", new, QA)
    pairs = 20
    await asyncio.gather(
        *(
            conversations.append("dan", new.id, [Turn("user", f"q{n}"), Turn("assistant", f"a{n}")])
            for n in range(pairs)
        )
    )
    got = await conversations.get("dan", new.id)
    contents = [m.content for m in got.messages][2:]
    assert got.conversation.message_count == 2 + 2 * pairs
    assert sorted(contents[0::2]) == sorted(f"q{n}" for n in range(pairs))
    assert [q[1:] for q in contents[0::2]] == [a[1:] for a in contents[1::2]]
