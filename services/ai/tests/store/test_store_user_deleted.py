"""auth's user.deleted, produced to Kafka, erases everything of that user and nothing of another."""

from __future__ import annotations

from typing import Any

from aether.ai.v1 import ai_pb2
from aether.auth.v1 import events_pb2 as auth_events
from aether_ai import events
from aether_ai.consumers import UserEventsConsumer
from aether_ai.conversations import Conversations, Turn
from aether_ai.jobs import Jobs
from aether_ai.preferences import Preferences
from aether_ai.usage import Completion, UsageStore
from aether_common.events import Event, EventProducer
from aether_common.postgres import PostgresDatabase

PER_USER = """
SELECT
    (SELECT count(*) FROM ai_conversations WHERE user_id = $1) AS conversations,
    (SELECT count(*) FROM ai_messages m JOIN ai_conversations c ON c.id = m.conversation_id
        WHERE c.user_id = $1) AS messages,
    (SELECT count(*) FROM ai_jobs WHERE user_id = $1) AS jobs,
    (SELECT count(*) FROM ai_preferences WHERE user_id = $1) AS preferences,
    (SELECT count(*) FROM ai_requests WHERE user_id = $1) AS requests,
    (SELECT count(*) FROM ai_usage_daily WHERE user_id = $1) AS daily
"""


async def populate(db: PostgresDatabase, user_id: str) -> None:
    conversations = Conversations(db)
    for n in range(2):
        conversation = await conversations.start_or_continue(
            user_id, "", first_message=f"q{n}", mode="fast"
        )
        await conversations.append(
            user_id, conversation, [Turn("user", f"q{n}"), Turn("assistant", "a")]
        )
    await Jobs(db).submit(user_id, ai_pb2.ChatRequest(message="later"))
    await Preferences(db).set_mode(user_id, "learn")
    await UsageStore(db).record(
        Completion(
            request_id=f"r-{user_id}",
            user_id=user_id,
            conversation_id="",
            kind="search",
            mode="normal_search",
            model="smollm2",
            prompt_tokens=5,
            completion_tokens=5,
            cost_usd=0.0,
            latency_ms=10,
            first_token_ms=5,
            cached=False,
        )
    )


async def counts(db: PostgresDatabase, user_id: str) -> dict[str, int]:
    return dict(await db.pool.fetchrow(PER_USER, user_id))


async def test_user_deleted_erases_that_user_only(
    store_db: PostgresDatabase, aether_endpoints: Any, topic_prefix: str, store_kit: Any
) -> None:
    gone, stays = "user-gone", "user-stays"
    await populate(store_db, gone)
    await populate(store_db, stays)
    before = await counts(store_db, stays)
    assert before == {
        "conversations": 2,
        "messages": 4,
        "jobs": 1,
        "preferences": 1,
        "requests": 1,
        "daily": 1,
    }

    bootstrap = aether_endpoints.kafka_bootstrap
    consumer = UserEventsConsumer(
        store_db, bootstrap=bootstrap, group_id=topic_prefix + "ai", topic_prefix=topic_prefix
    )
    producer = EventProducer(bootstrap, client_id="aether-auth-test")
    await consumer.start()
    await producer.start()
    try:
        await consumer.wait_running(30)
        assert await consumer.ready()
        deleted = Event(
            type=topic_prefix + events.USER_DELETED,
            subject=gone,
            payload=auth_events.UserDeleted(user_id=gone),
            source="auth",
        )
        await producer.publish(deleted)
        await producer.publish(deleted)  # delivered again: still one erasure, one record

        async def erased() -> bool:
            return await counts(store_db, gone) == {
                "conversations": 0,
                "messages": 0,
                "jobs": 0,
                "preferences": 0,
                "requests": 0,
                "daily": 1,  # counts and cost only, kept for billing
            }

        await store_kit.eventually(erased, within=30)
        handled = await store_kit.eventually(
            lambda: store_db.pool.fetchval(
                "SELECT count(*) FROM processed_events WHERE event_id = $1", deleted.id
            )
        )
        assert handled == 1
    finally:
        await producer.stop()
        await consumer.stop()

    assert await counts(store_db, stays) == before
