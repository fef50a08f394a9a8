"""The floor of an alert's trip from tick to socket: the hops the platform's path takes, done bare.

    python bench/alerts_floor.py WS_PORT KAFKA_BOOTSTRAP POSTGRES_DSN REDIS_URL TICKS_TOPIC
        RULES_JSON FETCH_MAX_WAIT_MS                                   # the server side

bench/alerts.py starts it (its own process, like a service) on the platform's own servers and
drives it with the same ticks, at the same rate, in the same run. Nothing of the kit's here: no
envelopes, interceptors, identity, validation, unit of work, idempotency records, metrics,
logging or retries. What one firing cannot skip, in the platform's order:

1. Kafka: the tick (MarketTick protobuf bytes) consumed by an aiokafka group member;
2. the rule lookup: bisect over the symbol's sorted price_above thresholds (RULES_JSON:
   [[rule_id, user_id, symbol, value], ...]);
3. PostgreSQL (asyncpg): the firing and its outbox row in one transaction;
4. Kafka: the triggered record produced (after the commit) and consumed by a second group;
5. PostgreSQL: the delivery row inserted (a transaction), claimed (a transaction), and, after
   the send, marked sent (a transaction);
6. Redis: the frame PUBLISHed on the user's channel;
7. a `websockets` server subscribed to those channels sends it on the user's connections
   (`ws://127.0.0.1:WS_PORT/?user=<id>`).
Both consumers use FETCH_MAX_WAIT_MS, the alerts consumers' setting.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import uuid
from collections import defaultdict
from typing import Any

SCHEMA = """
DROP TABLE IF EXISTS floor_firings, floor_outbox, floor_deliveries;
CREATE TABLE floor_firings (id uuid PRIMARY KEY, rule_id text NOT NULL, user_id text NOT NULL,
    symbol text NOT NULL, price double precision NOT NULL, trigger_id text NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT now(), UNIQUE (rule_id, trigger_id));
CREATE TABLE floor_outbox (id bigserial PRIMARY KEY, payload bytea NOT NULL,
    sent_at timestamptz);
CREATE TABLE floor_deliveries (firing_id uuid NOT NULL, channel text NOT NULL,
    status text NOT NULL, attempts int NOT NULL DEFAULT 0, payload jsonb NOT NULL,
    PRIMARY KEY (firing_id, channel));
"""
TRIGGERED_TOPIC = "bench.floor.triggered"
CHANNEL = "floor:user:"


def serve(
    ws_port: int,
    bootstrap: str,
    dsn: str,
    redis_url: str,
    ticks_topic: str,
    rules_json: str,
    fetch_max_wait_ms: int,
) -> None:
    import asyncpg
    import orjson
    import uvloop
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from redis.asyncio import Redis
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    from aether.charts.v1 import events_pb2

    thresholds: dict[str, list[float]] = defaultdict(list)
    owners: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with open(rules_json) as f:
        for rule_id, user_id, symbol, value in sorted(json.load(f), key=lambda r: r[3]):
            thresholds[symbol].append(value)
            owners[symbol].append((rule_id, user_id))
    fired_upto: dict[str, int] = defaultdict(int)  # rules below this index have fired (once)
    sockets: dict[str, set[ServerConnection]] = defaultdict(set)

    async def main() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
        await pool.execute(SCHEMA)
        redis = Redis.from_url(redis_url)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()

        async def on_ticks(raws: list[bytes]) -> None:
            """One fetched batch of ticks: its firings and outbox rows in one transaction."""
            firings = []
            for raw in raws:
                tick = events_pb2.MarketTick.FromString(raw)
                symbol, price = tick.symbol, tick.price
                start = fired_upto[symbol]
                end = bisect.bisect_right(thresholds[symbol], price)
                fired_upto[symbol] = max(start, end)
                for rule_id, user_id in owners[symbol][start:end]:
                    firings.append((uuid.uuid4(), rule_id, user_id, symbol, price, tick.tick_id))
            if not firings:
                return
            keys = ("id", "rule_id", "user_id", "symbol", "price")
            payloads = [
                orjson.dumps(
                    dict(zip(keys, (str(f[0]), *f[1:5]), strict=True), type="notification")
                )
                for f in firings
            ]
            async with pool.acquire() as db, db.transaction():
                await db.executemany(
                    "INSERT INTO floor_firings (id, rule_id, user_id, symbol, price, trigger_id)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    firings,
                )
                await db.executemany(
                    "INSERT INTO floor_outbox (payload) VALUES ($1)", [(p,) for p in payloads]
                )
            for firing, payload in zip(firings, payloads, strict=True):
                await producer.send(TRIGGERED_TOPIC, payload, key=firing[2].encode())

        async def on_triggered(raws: list[bytes]) -> None:
            """One fetched batch of firings: their delivery rows inserted, claimed, sent on
            Redis in one pipeline, marked sent."""
            firings = [orjson.loads(raw) for raw in raws]
            firings = [f for f in firings if "id" in f]  # not the record that made the topic
            if not firings:
                return
            ids = [uuid.UUID(f["id"]) for f in firings]
            async with pool.acquire() as db:
                await db.executemany(
                    "INSERT INTO floor_deliveries (firing_id, channel, status, payload)"
                    " VALUES ($1, 'in_app', 'pending', $2) ON CONFLICT DO NOTHING",
                    [(i, raw.decode()) for i, raw in zip(ids, raws, strict=False)],
                )
                await db.execute(
                    "UPDATE floor_deliveries SET status = 'sending', attempts = attempts + 1"
                    " WHERE firing_id = ANY($1) AND channel = 'in_app' AND status = 'pending'",
                    ids,
                )
                async with redis.pipeline(transaction=False) as pipe:
                    for firing in firings:
                        pipe.publish(CHANNEL + firing["user_id"], orjson.dumps(firing))
                    await pipe.execute()
                await db.execute(
                    "UPDATE floor_deliveries SET status = 'sent'"
                    " WHERE firing_id = ANY($1) AND channel = 'in_app'",
                    ids,
                )

        async def joined(topic: str, group: str) -> Any:
            """A started group member holding its partitions (so no tick waits for a join)."""
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=True,  # the bare client's way: offsets in the background
                auto_commit_interval_ms=1000,
                auto_offset_reset="latest",
                fetch_max_wait_ms=fetch_max_wait_ms,
            )
            await consumer.start()
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
            return consumer

        async def consume(consumer: Any, handle: Any) -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    await handle([record.value for record in records])

        async def fan_out(pubsub: Any) -> None:
            async for message in pubsub.listen():
                if message["type"] != "pmessage":
                    continue
                user_id = message["channel"].decode().removeprefix(CHANNEL)
                for ws in list(sockets.get(user_id, ())):
                    await ws.send(message["data"].decode())

        async def handler(ws: ServerConnection) -> None:
            user_id = (ws.request.path if ws.request else "").partition("user=")[2]
            sockets[user_id].add(ws)
            try:
                await ws.send('{"type": "ready"}')
                await ws.wait_closed()
            finally:
                sockets[user_id].discard(ws)

        await producer.send_and_wait(TRIGGERED_TOPIC, b"{}")  # creates the topic up front
        ticks = await joined(ticks_topic, "floor-engine")
        triggered = await joined(TRIGGERED_TOPIC, "floor-delivery")
        pubsub = redis.pubsub()
        await pubsub.psubscribe(CHANNEL + "*")
        async with ws_serve(handler, "127.0.0.1", ws_port, compression=None):
            print("ready", flush=True)
            await asyncio.gather(
                consume(ticks, on_ticks),
                consume(triggered, on_triggered),
                fan_out(pubsub),
            )

    uvloop.run(main())


if __name__ == "__main__":
    ws_port, bootstrap, dsn, redis_url, topic, rules, wait_ms = sys.argv[1:8]
    serve(int(ws_port), bootstrap, dsn, redis_url, topic, rules, int(wait_ms))
