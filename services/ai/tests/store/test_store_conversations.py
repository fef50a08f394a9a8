"""Conversations (start, continue, append, list with cursor, get, delete) and preferences."""

from __future__ import annotations

import uuid
from typing import Any

from aether_ai.conversations import Conversations, Turn, title_of
from aether_ai.preferences import Preferences
from aether_common.postgres import PostgresDatabase


async def test_start_append_and_continue_with_the_last_turns(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    conversations = Conversations(store_db, history_turns=3)
    first = "  \nWhat moves the price of gold?\nAnd silver?"
    new = await conversations.start_or_continue("alice", "", first_message=first, mode="fast")
    conversation_id = new.id
    assert new.history == []
    assert new.is_new
    assert uuid.UUID(conversation_id)
    # Nothing is stored until its first turns are.
    assert (await store_kit.failure(conversations.get("alice", conversation_id))).code == (
        "not_found"
    )

    await conversations.append(
        "alice",
        new,
        [
            Turn("user", first, "fast"),
            Turn("assistant", "Rates, the dollar, fear.", "fast", "smollm2"),
        ],
    )
    await conversations.append(
        "alice",
        conversation_id,
        [Turn("user", "And silver?", "learn"), Turn("assistant", "Industry too.", "learn", "m2")],
    )
    same = await conversations.start_or_continue(
        "alice", conversation_id, first_message="ignored", mode="learn"
    )
    assert (same.id, same.is_new) == (conversation_id, False)
    assert same.history == [
        Turn("assistant", "Rates, the dollar, fear.", "fast", "smollm2"),
        Turn("user", "And silver?", "learn"),
        Turn("assistant", "Industry too.", "learn", "m2"),
    ]

    got = await conversations.get("alice", conversation_id.upper())  # any UUID spelling
    assert got.conversation.conversation_id == conversation_id
    assert got.conversation.title == "What moves the price of gold?"
    assert got.conversation.mode == "learn"  # the latest mode used
    assert got.conversation.message_count == 4
    assert [(m.role, m.content, m.model) for m in got.messages] == [
        ("user", first, ""),
        ("assistant", "Rates, the dollar, fear.", "smollm2"),
        ("user", "And silver?", ""),
        ("assistant", "Industry too.", "m2"),
    ]
    assert got.conversation.updated_at.ToDatetime() >= got.conversation.created_at.ToDatetime()
    assert got.messages[0].created_at.seconds > 0


async def test_titles_are_the_first_line_cut_to_80_characters() -> None:
    assert title_of("Hello there\nsecond line") == "Hello there"
    long = title_of("x" * 200)
    assert len(long) == 80
    assert long.endswith("…")
    assert title_of("   \n  ") == "New conversation"


async def test_another_users_or_an_unknown_conversation_is_not_found(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    conversations = Conversations(store_db)
    started = await conversations.start_or_continue("alice", "", first_message="hi", mode="fast")
    await conversations.append("alice", started, [Turn("user", "hi")])
    mine = started.id
    unknown = str(uuid.uuid4())
    for conversation_id in (mine, unknown):
        calls = [
            conversations.start_or_continue("bob", conversation_id, first_message="x", mode="f"),
            conversations.append("bob", conversation_id, [Turn("user", "x")]),
            conversations.get("bob", conversation_id),
            conversations.delete("bob", conversation_id),
        ]
        errors = [await store_kit.failure(call) for call in calls]
        assert {(e.code, e.detail) for e in errors} == {("not_found", "conversation not found")}
    # Bob's attempts changed nothing of Alice's.
    got = await conversations.get("alice", mine)
    assert got.conversation.message_count == 1


async def test_a_non_uuid_id_is_a_validation_error(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    conversations = Conversations(store_db)
    for bad in ("nope", "123", "'; DROP TABLE ai_conversations; --"):
        calls = [
            conversations.start_or_continue("alice", bad, first_message="x", mode="fast"),
            conversations.append("alice", bad, []),
            conversations.get("alice", bad),
            conversations.delete("alice", bad),
        ]
        for call in calls:
            error = await store_kit.failure(call)
            assert error.code == "validation"
            assert "conversation_id" in error.detail


async def test_list_most_recent_first_with_a_cursor(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    conversations = Conversations(store_db)
    ids = []
    for user, n in [*(("alice", n) for n in range(5)), ("bob", 5)]:
        started = await conversations.start_or_continue(
            user, "", first_message=f"question {n}", mode="fast"
        )
        await conversations.append(user, started, [Turn("user", f"question {n}")])
        ids.append(started.id)
    # Answering the oldest moves it to the top.
    await conversations.append("alice", ids[0], [Turn("user", "again")])
    expected = [ids[0], ids[4], ids[3], ids[2], ids[1]]

    page1 = await conversations.list("alice", 2, None)
    assert [c.conversation_id for c in page1.conversations] == expected[:2]
    cursor = page1.conversations[-1].updated_at.ToDatetime()  # naive UTC, as the servicer has it
    page2 = await conversations.list("alice", 2, cursor)
    assert [c.conversation_id for c in page2.conversations] == expected[2:4]
    page3 = await conversations.list("alice", 100, page2.conversations[-1].updated_at.ToDatetime())
    assert [c.conversation_id for c in page3.conversations] == expected[4:]
    everything = await conversations.list("alice", 100, None)
    assert [c.conversation_id for c in everything.conversations] == expected
    assert everything.conversations[0].message_count == 2

    for bad in (0, 101):
        assert (await store_kit.failure(conversations.list("alice", bad, None))).code == (
            "validation"
        )


async def test_delete_removes_the_conversation_and_its_messages(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    conversations = Conversations(store_db)
    started = await conversations.start_or_continue("alice", "", first_message="bye", mode="fast")
    await conversations.append("alice", started, [Turn("user", "bye")])
    conversation_id = started.id
    await conversations.delete("alice", conversation_id)

    assert (await store_kit.failure(conversations.get("alice", conversation_id))).code == (
        "not_found"
    )
    assert (await store_kit.failure(conversations.delete("alice", conversation_id))).code == (
        "not_found"
    )
    assert await store_db.pool.fetchval("SELECT count(*) FROM ai_messages") == 0


async def test_preferences_round_trip(store_db: PostgresDatabase) -> None:
    preferences = Preferences(store_db)
    assert await preferences.get_mode("alice") is None
    await preferences.set_mode("alice", "deep_thinking")
    await preferences.set_mode("bob", "fast")
    assert await preferences.get_mode("alice") == "deep_thinking"
    await preferences.set_mode("alice", "trade_buddy")
    assert await preferences.get_mode("alice") == "trade_buddy"
    assert await preferences.get_mode("bob") == "fast"
