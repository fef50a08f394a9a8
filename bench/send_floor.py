"""The floor of a chat send: the work of gateway -> SendMessage -> chat, done bare.

    python bench/send_floor.py PORT MONGO_URL DATABASE REDIS_URL     # the server side

bench/chat.py starts it on the platform's own MongoDB and Redis and calls it with
`paced_sends` at the end-to-end run's low rate, in the same run. Nothing of the kit's here: no
interceptors, identity, validation, batching, unit of work, metrics, logging or retries. One
call is what one send of one message cannot skip, done the way chat does it:

- ONE gRPC hop: a plain `grpc.aio` server (uvloop) and channel, raw bytes both ways;
- chat's transaction, with pymongo's asyncio client, the commands of `ChatService._store` for
  a batch of one (SEND_COMMANDS): the room's counter (findAndModify $inc, the message id and
  time $set), the sender's read position (update $max, also the membership check), the
  message (insert), its event (insert into event_outbox), commit; on collections with chat's
  own indexes (`aether_chat.repository.ensure_indexes`, the outbox's);
- ONE Redis round trip: the message frame PUBLISHed on the room's channel with the room's
  cache version bumped (INCR + EXPIRE), in one pipeline, as `realtime.Fanout.apply`;
- the reply: the stored message's JSON.

After the ack chat's outbox relay publishes the event (find the unsent rows, produce to Kafka,
update their sent_at), woken by a change stream: that is off the send's path and not here.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson

METHOD = "/bench.SendFloor/Send"
ROOM = "floor-room"
SENDER = "floor-user"
# What one send issues, in order (printed by bench/chat.py).
SEND_COMMANDS = (
    "findAndModify rooms ($inc last_seq; $set last_message_id, last_activity_at) [transaction]",
    "update members ($max last_read_seq of the sender: the membership check) [transaction]",
    "insert messages (the message) [transaction]",
    "insert event_outbox (aether.chat.message.created.v1) [transaction]",
    "commitTransaction",
    "Redis pipeline: PUBLISH the frame, INCR + EXPIRE the room's cache version",
)


def serve(port: int, mongo_url: str, database: str, redis_url: str) -> None:
    import grpc
    import uvloop
    from bson import Binary, Int64
    from pymongo import AsyncMongoClient, ReturnDocument
    from redis.asyncio import Redis

    from aether_chat import repository
    from aether_chat.events import ChatEvents
    from aether_common.events import outbox_mongo

    async def main() -> None:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url, tz_aware=True)
        db = client[database]
        await repository.ensure_indexes(db)
        await outbox_mongo.ensure_indexes(db)
        await db.rooms.insert_one({"_id": ROOM, "last_seq": 0})
        await db.members.insert_one({"room_id": ROOM, "user_id": SENDER, "last_read_seq": 0})
        redis = Redis.from_url(redis_url)
        # An envelope of the real event's size (chat builds one per message; a protobuf).
        sample = repository.MessageRecord(
            id=uuid.uuid4().hex,
            room_id=ROOM,
            seq=1,
            sender_id=SENDER,
            client_msg_id="c",
            content="x" * 100,
            mentions=(),
            reply_to_seq=0,
            created_at=datetime.now(UTC),
        )
        envelope = Binary(ChatEvents().message_created(sample).to_envelope().SerializeToString())

        async def send(request: bytes, context: object) -> bytes:
            content = request.decode()
            at = datetime.now(UTC)
            message_id = uuid.uuid4().hex
            async with client.start_session() as session:
                await session.start_transaction()
                room = await db.rooms.find_one_and_update(
                    {"_id": ROOM},
                    {
                        "$inc": {"last_seq": 1},
                        "$set": {"last_message_id": message_id, "last_activity_at": at},
                    },
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
                assert room is not None
                seq = int(room["last_seq"])
                await db.members.update_one(
                    {"room_id": ROOM, "user_id": SENDER},
                    {"$max": {"last_read_seq": seq}},
                    session=session,
                )
                message = {
                    "_id": message_id,
                    "room_id": ROOM,
                    "seq": seq,
                    "sender_id": SENDER,
                    "client_msg_id": message_id,
                    "content": content,
                    "mentions": [],
                    "reply_to_seq": 0,
                    "created_at": at,
                    "edited_at": None,
                    "deleted": False,
                    "deleted_by": "",
                }
                await db.messages.insert_one(message, session=session)
                await db[outbox_mongo.OUTBOX_COLLECTION].insert_one(
                    {
                        "seq": Int64(time.time_ns() // 1000),
                        "event_id": message_id,
                        "topic": "aether.chat.message.created.v1",
                        "envelope": envelope,
                        "created_at": at,
                        "sent_at": None,
                    },
                    session=session,
                )
                await session.commit_transaction()
            frame = orjson.dumps(
                {"type": "message", "room_id": ROOM, "seq": seq, "message": message},
                default=str,
            )
            pipe = redis.pipeline(transaction=False)
            pipe.publish(f"bench-floor:room:{ROOM}", frame)
            pipe.incr(f"bench-floor:v:{ROOM}")
            pipe.expire(f"bench-floor:v:{ROOM}", 3600)
            await pipe.execute()
            return frame

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.SendFloor", {"Send": grpc.unary_unary_rpc_method_handler(send)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    uvloop.run(main())


async def paced_sends(target: str, rate: float, seconds: float, size: int) -> list[float]:
    """Sends at `rate`/s for `seconds`, one at a time on one channel: each send's latency, ms."""
    import grpc

    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        await call(b"warm-up", timeout=10)
        content = ("x" * size).encode()
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            began = time.perf_counter()
            await call(content, timeout=10)
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


if __name__ == "__main__":
    port, mongo_url, database, redis_url = sys.argv[1:]
    serve(int(port), mongo_url, database, redis_url)
