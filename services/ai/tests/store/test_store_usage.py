"""Usage: request rows, the daily aggregate, the outbox event and Kafka, usage(), performance()."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from aether.ai.v1 import events_pb2
from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_ai import events
from aether_ai.usage import Completion, UsageStore
from aether_common.events import EventProducer, PgOutboxRelay, decode_event, event_from_record
from aether_common.postgres import PostgresDatabase


def completion(user_id: str, **overrides: Any) -> Completion:
    values: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "user_id": user_id,
        "conversation_id": str(uuid.uuid4()),
        "kind": "chat",
        "mode": "fast",
        "model": "smollm2",
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "cost_usd": 0.0015,
        "latency_ms": 900,
        "first_token_ms": 200,
        "cached": False,
    }
    values.update(overrides)
    return Completion(**values)


async def test_record_writes_the_request_the_aggregate_and_the_event_once(
    store_db: PostgresDatabase,
) -> None:
    usage = UsageStore(store_db, topic_prefix="t.")
    first = completion("u1")
    cached = completion("u1", cached=True, prompt_tokens=0, completion_tokens=0, cost_usd=0.0)
    other_model = completion("u1", model="qwen", prompt_tokens=10, completion_tokens=5)

    for item in (first, first, cached, other_model, first):  # `first` retried twice
        await usage.record(item)

    requests = await store_db.pool.fetch("SELECT * FROM ai_requests ORDER BY created_at")
    assert sorted(r["request_id"] for r in requests) == sorted(
        [first.request_id, cached.request_id, other_model.request_id]
    )
    stored = next(r for r in requests if r["request_id"] == first.request_id)
    assert (stored["kind"], stored["mode"], stored["latency_ms"], stored["cached"]) == (
        "chat",
        "fast",
        900,
        False,
    )
    daily = {
        r["model"]: r
        for r in await store_db.pool.fetch(
            "SELECT * FROM ai_usage_daily WHERE user_id = 'u1' "
            "AND day = (now() AT TIME ZONE 'UTC')::date"
        )
    }
    assert daily["smollm2"]["requests"] == 2
    assert daily["smollm2"]["cached_requests"] == 1
    assert daily["smollm2"]["prompt_tokens"] == 120
    assert daily["smollm2"]["completion_tokens"] == 30
    assert daily["smollm2"]["cost_usd"] == pytest.approx(0.0015)
    assert daily["qwen"]["requests"] == 1

    outbox = await store_db.pool.fetch("SELECT topic, envelope FROM event_outbox ORDER BY seq")
    assert [row["topic"] for row in outbox] == ["t." + events.REQUEST_COMPLETED] * 3
    event = decode_event(
        EventEnvelope.FromString(outbox[0]["envelope"]), events_pb2.RequestCompleted
    )
    assert event.subject == "u1"
    assert event.source == "ai"
    assert event.payload == first.to_event_payload()


async def test_a_refused_record_writes_nothing(store_db: PostgresDatabase) -> None:
    usage = UsageStore(store_db)
    with pytest.raises(ValueError, match="kind"):
        await usage.record(completion("u1", kind="nonsense"))
    assert await store_db.pool.fetchval("SELECT count(*) FROM ai_requests") == 0
    assert await store_db.pool.fetchval("SELECT count(*) FROM event_outbox") == 0


async def test_the_relay_puts_the_event_on_kafka(
    store_db: PostgresDatabase, aether_endpoints: Any, topic_prefix: str, store_kit: Any
) -> None:
    bootstrap = aether_endpoints.kafka_bootstrap
    producer = EventProducer(bootstrap, client_id="aether-ai-test")
    relay = events.build_relay(store_db, producer, topic_prefix=topic_prefix)
    assert isinstance(relay, PgOutboxRelay)
    usage = UsageStore(store_db, topic_prefix=topic_prefix)
    done = completion("user-kafka", kind="job", cached=True, mode="deep_thinking")
    await producer.start()
    await relay.start()
    try:
        await usage.record(done)
        records = await store_kit.read_topic(bootstrap, topic_prefix + events.REQUEST_COMPLETED, 1)
    finally:
        await relay.stop()
        await producer.stop()
    assert len(records) == 1
    assert records[0].key == b"user-kafka"
    event = event_from_record(records[0].headers, records[0].value, events_pb2.RequestCompleted)
    assert event.type == topic_prefix + events.REQUEST_COMPLETED
    assert event.payload.request_id == done.request_id
    assert event.payload.kind == "job"
    assert event.payload.mode == "deep_thinking"
    assert event.payload.cached is True
    assert event.payload.prompt_tokens == done.prompt_tokens
    assert event.payload.cost_usd == pytest.approx(done.cost_usd)
    assert events.topic_specs(topic_prefix)[0].name == topic_prefix + events.REQUEST_COMPLETED


async def test_usage_over_days_with_totals(store_db: PostgresDatabase, store_kit: Any) -> None:
    usage = UsageStore(store_db)
    await usage.record(completion("me", prompt_tokens=100, completion_tokens=10, cost_usd=0.5))
    await usage.record(completion("me", prompt_tokens=50, completion_tokens=5, cost_usd=0.25))
    await usage.record(completion("me", model="qwen", cached=True, cost_usd=0.0))
    await usage.record(completion("someone-else", prompt_tokens=999))
    # Earlier days, as if recorded then: 5 days ago (inside 30 days) and 40 days ago (outside).
    for days_ago, tokens in ((5, 7), (40, 1000)):
        await store_db.pool.execute(
            "INSERT INTO ai_usage_daily VALUES ('me', (now() AT TIME ZONE 'UTC')::date - $1::int, "
            "'smollm2', 2, 0, $2, $2, 1.0)",
            days_ago,
            tokens,
        )
    today = await store_db.pool.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")

    month = await usage.usage("me", 30)
    assert [(d.day, d.model) for d in month.days] == [
        (today.isoformat(), "qwen"),
        (today.isoformat(), "smollm2"),
        ((today - timedelta(days=5)).isoformat(), "smollm2"),
    ]
    smollm_today = month.days[1]
    assert (smollm_today.requests, smollm_today.prompt_tokens) == (2, 150)
    assert smollm_today.completion_tokens == 15
    assert smollm_today.cost_usd == pytest.approx(0.75)
    assert month.days[0].cached_requests == 1
    assert month.requests == 1 + 2 + 2
    assert month.prompt_tokens == 120 + 150 + 7
    assert month.completion_tokens == 30 + 15 + 7
    assert month.cost_usd == pytest.approx(0.75 + 1.0)

    one_day = await usage.usage("me", 1)
    assert {d.day for d in one_day.days} == {today.isoformat()}
    year = await usage.usage("me", 366)
    assert year.requests == 7
    assert (await usage.usage("nobody", 30)).requests == 0

    for bad in (0, 367, -1):
        error = await store_kit.failure(usage.usage("me", bad))
        assert error.code == "validation"


async def test_performance_percentiles_over_the_window(
    store_db: PostgresDatabase, store_kit: Any
) -> None:
    usage = UsageStore(store_db)
    small = [(120, 40, False), (300, 90, False), (80, 80, True), (1500, 400, False)]
    large = [(2000, 600, False), (2600, 700, False), (90, 90, True)]
    for latency, first_token, cached in small:
        await usage.record(
            completion(
                "a",
                model="small",
                latency_ms=latency,
                first_token_ms=first_token,
                cached=cached,
                prompt_tokens=10,
                completion_tokens=3,
                cost_usd=0.01,
            )
        )
    for latency, first_token, cached in large:
        await usage.record(
            completion(
                "b",
                model="large",
                latency_ms=latency,
                first_token_ms=first_token,
                cached=cached,
                prompt_tokens=20,
                completion_tokens=6,
                cost_usd=0.1,
            )
        )
    # An old request, outside a one-hour window.
    old = completion("a", model="small", latency_ms=99_999)
    await usage.record(old)
    await store_db.pool.execute(
        "UPDATE ai_requests SET created_at = now() - interval '2 hours' WHERE request_id = $1",
        old.request_id,
    )

    perf = await usage.performance(60)
    every = small + large
    p = store_kit.percentile_cont
    assert perf.requests == len(every)
    assert perf.latency_p50_ms == pytest.approx(p([r[0] for r in every], 0.5))
    assert perf.latency_p95_ms == pytest.approx(p([r[0] for r in every], 0.95))
    assert perf.cache_hit_rate == pytest.approx(2 / 7)
    assert perf.prompt_tokens == 4 * 10 + 3 * 20
    assert perf.completion_tokens == 4 * 3 + 3 * 6
    assert perf.cost_usd == pytest.approx(4 * 0.01 + 3 * 0.1)
    assert (perf.queue_depth, perf.in_flight, perf.max_concurrency) == (0, 0, 0)
    assert [m.model for m in perf.models] == ["large", "small"]
    for model, rows in zip(perf.models, (large, small), strict=True):
        assert model.requests == len(rows)
        assert model.latency_p50_ms == pytest.approx(p([r[0] for r in rows], 0.5))
        assert model.latency_p95_ms == pytest.approx(p([r[0] for r in rows], 0.95))
        assert model.first_token_p50_ms == pytest.approx(p([r[1] for r in rows], 0.5))
        assert model.first_token_p95_ms == pytest.approx(p([r[1] for r in rows], 0.95))
        assert model.cache_hit_rate == pytest.approx(sum(r[2] for r in rows) / len(rows))

    wider = await usage.performance(180)
    assert wider.requests == len(every) + 1

    error = await store_kit.failure(usage.performance(0))
    assert error.code == "validation"


async def test_performance_of_an_empty_window_is_zero(store_db: PostgresDatabase) -> None:
    perf = await UsageStore(store_db).performance(10)
    assert perf.requests == 0
    assert perf.latency_p95_ms == 0.0
    assert list(perf.models) == []
