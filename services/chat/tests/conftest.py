"""The chat service in-process on a free gRPC port, against the session's real servers (MongoDB,
Redis and Kafka from the devstack plugin) and a real gRPC peer playing auth.

The auth peer is a test peer, not a datastore: an AuthService on a real socket (the shared
`create_server`) that serves a JWKS built from a real Ed25519 key pair, so chat fetches and
verifies keys exactly as it will against auth. Tokens are minted here with the private key.

Each test gets its own Mongo database, Redis prefix (fan-out channels included) and topic prefix.
The `chat` fixture is the running service plus the helpers tests share, since test modules
cannot import each other here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_chat.app import ChatApp
from aether_chat.config import ChatSettings
from aether_common.errors import AetherError
from aether_common.grpc import GrpcServer, checked, create_channel, create_server
from aether_common.lifecycle import Component
from aether_devstack.endpoints import Endpoints

if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = chat_pb2_grpc.ChatServiceAsyncStub
else:
    Stub = chat_pb2_grpc.ChatServiceStub

ISSUER = "aether-auth"  # chat's defaults, the same as the gateway's and auth's
AUDIENCE = "aether"
PUBLIC = chat_pb2.ROOM_VISIBILITY_PUBLIC
PRIVATE = chat_pb2.ROOM_VISIBILITY_PRIVATE


# -- keys, tokens and the auth peer ------------------------------------------------------------
@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey
    jwk: dict[str, Any]


def new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = f"ed-{uuid.uuid4().hex[:8]}"
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key())) | {
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    return SigningKey(kid, private, jwk)


def mint(key: SigningKey, sub: str, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "sub": sub,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 900,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "plan": "free",
        "roles": ["user"],
        "perms": ["chat:read", "chat:write"],
        "sid": uuid.uuid4().hex,
    } | claims
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None},
        key.private,
        algorithm="EdDSA",
        headers={"kid": key.kid, "typ": "at+jwt", **(headers or {})},
    )


@dataclass
class FakeAuth:
    jwks: list[dict[str, Any]]
    address: str = ""
    jwks_calls: int = 0


class _AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, fake: FakeAuth) -> None:
        self._fake = fake

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Any
    ) -> auth_pb2.GetJwksResponse:
        self._fake.jwks_calls += 1
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": self._fake.jwks}))


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return new_key()


@pytest.fixture(scope="session")
async def fake_auth(signing_key: SigningKey) -> AsyncIterator[FakeAuth]:
    fake = FakeAuth(jwks=[signing_key.jwk])
    server: GrpcServer = create_server("auth", host="127.0.0.1", port=0)
    server.add_service(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        _AuthServicer(fake),  # type: ignore[abstract]  # GetJwks is all chat calls
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    )
    await server.start()
    fake.address = server.address
    yield fake
    await server.stop(grace=0)


# -- the service -------------------------------------------------------------------------------
@pytest.fixture
def chat_settings(
    aether_endpoints: Endpoints,
    mongo_db_name: str,
    redis_prefix: str,
    topic_prefix: str,
    fake_auth: FakeAuth,
) -> ChatSettings:
    return ChatSettings.model_validate(
        {
            "environment": "test",
            "mongo_url": aether_endpoints.mongo_url,
            "mongo_database": mongo_db_name,
            "redis_url": aether_endpoints.redis_url,
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "auth_grpc_target": fake_auth.address,
            "redis_prefix": redis_prefix,
            "fanout_prefix": redis_prefix + "fanout:",
            "topic_prefix": topic_prefix,
            "retention_interval_s": 3600,
            "mongo_pool_size": 20,
        }
    )


@dataclass
class Chat:
    """The running service and the helpers tests share."""

    app: ChatApp
    stub: Stub
    settings: ChatSettings
    key: SigningKey
    redis: Redis
    mongo: AsyncMongoClient[dict[str, Any]]
    users: dict[str, str] = field(default_factory=dict)

    PUBLIC = PUBLIC
    PRIVATE = PRIVATE

    # -- identities ------------------------------------------------------------------------
    def user(self, name: str = "user") -> str:
        """A fresh user id (what auth puts in `sub`)."""
        return f"{name}-{uuid.uuid4().hex[:10]}"

    def token(self, user_id: str, **claims: Any) -> str:
        return mint(self.key, user_id, **claims)

    def auth(self, user_id: str, **claims: Any) -> tuple[tuple[str, str], ...]:
        """Call metadata for `user_id` (one token per user, like a logged-in client)."""
        if claims:
            return (("authorization", f"Bearer {self.token(user_id, **claims)}"),)
        token = self.users.get(user_id) or self.users.setdefault(user_id, self.token(user_id))
        return (("authorization", f"Bearer {token}"),)

    # -- calls -----------------------------------------------------------------------------
    async def create_room(
        self,
        owner: str,
        *,
        visibility: chat_pb2.RoomVisibility.ValueType = PUBLIC,
        members: list[str] | None = None,
        name: str = "Trading floor",
    ) -> chat_pb2.Room:
        response = await self.stub.CreateRoom(
            chat_pb2.CreateRoomRequest(name=name, visibility=visibility, member_ids=members or []),
            metadata=self.auth(owner),
        )
        return response.room

    async def send(
        self, user: str, room_id: str, content: str = "hello", **fields: Any
    ) -> chat_pb2.SendMessageResponse:
        fields.setdefault("client_msg_id", uuid.uuid4().hex)
        return await self.stub.SendMessage(
            chat_pb2.SendMessageRequest(room_id=room_id, content=content, **fields),
            metadata=self.auth(user),
        )

    async def history(self, user: str, room_id: str, **fields: Any) -> chat_pb2.GetHistoryResponse:
        return await self.stub.GetHistory(
            chat_pb2.GetHistoryRequest(room_id=room_id, **fields), metadata=self.auth(user)
        )

    # -- the datastores ----------------------------------------------------------------------
    @property
    def db(self) -> Any:
        return self.mongo[self.settings.mongo_database]

    def channel(self, room_id: str) -> str:
        return f"{self.settings.fanout_prefix}room:{room_id}"

    async def subscribe(self, *room_ids: str) -> Frames:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(*(self.channel(room_id) for room_id in room_ids))
        # The subscribe confirmations first, so nothing published after this is missed.
        for _ in room_ids:
            await pubsub.get_message(timeout=2.0)
        return Frames(pubsub)


@dataclass
class Frames:
    """Frames received on subscribed fan-out channels (the gateway's side of docs/chat.md)."""

    pubsub: PubSub
    raw: list[bytes] = field(default_factory=list)

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no frame arrived"
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None and message["type"] == "message":
                self.raw.append(message["data"])
                frame: dict[str, Any] = orjson.loads(message["data"])
                return frame

    async def until(self, kind: str, within: float = 5.0) -> dict[str, Any]:
        """The next frame of type `kind` (others are skipped)."""
        deadline = time.monotonic() + within
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if frame["type"] == kind:
                return frame

    async def none(self, within: float = 0.3) -> None:
        message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=within)
        assert message is None, message

    async def close(self) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]


StartChat = Callable[..., Awaitable[Chat]]


@pytest.fixture
async def start_chat(
    chat_settings: ChatSettings, signing_key: SigningKey, redis_prefix: str
) -> AsyncIterator[StartChat]:
    """Start the service (the same wiring as `python -m aether_chat`, gRPC on a free port).
    `events=True` also starts the producer and the outbox relay, `consume=True` the consumer."""
    started: list[tuple[list[Component], grpc.aio.Channel | None]] = []
    redis = Redis.from_url(chat_settings.redis_url, decode_responses=False)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        chat_settings.mongo_url, tz_aware=True
    )

    async def start(*, events: bool = False, consume: bool = False, **overrides: Any) -> Chat:
        settings = chat_settings.model_copy(update=overrides)
        app = ChatApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        components: list[Component] = []
        started.append((components, None))
        for component in app.components(events=events, consume=consume):
            await component.start()
            components.append(component)
        channel = create_channel(app.grpc.address, default_timeout=15)
        started[-1] = (components, channel)
        stub: Stub = chat_pb2_grpc.ChatServiceStub(channel)
        return Chat(app, stub, settings, signing_key, redis, mongo)

    yield start
    for components, channel in reversed(started):
        if channel is not None:
            await channel.close(grace=None)
        for component in reversed(components):
            await component.stop()
    await mongo.drop_database(chat_settings.mongo_database)
    await mongo.close()
    keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
async def chat(start_chat: StartChat) -> Chat:
    return await start_chat()


# -- plain helpers (fixtures hand them out; test modules cannot import this file) -----------
async def failure(call: Awaitable[Any]) -> AetherError:
    """The typed error a call failed with (rebuilt from its gRPC status and details)."""
    try:
        await checked(call)
    except AetherError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 20.0) -> list[Any]:
    """Records of `topic` from the beginning, with a real consumer, until `count` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        partitions = None
        while not partitions:
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            if topic in await consumer.topics():
                partitions = consumer.partitions_for_topic(topic)
            else:
                await asyncio.sleep(0.05)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while len(records) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(records)} of {count} records from {topic}"
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.2) * 1000))
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Kit:
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    read_topic: Callable[..., Awaitable[list[Any]]]
    mint: Callable[..., str]
    new_key: Callable[[], SigningKey]


@pytest.fixture
def kit() -> Kit:
    return Kit(failure, read_topic, mint, new_key)
