"""The chat service in-process on a free gRPC port, against the session's real servers (MongoDB,
Redis and Kafka from the devstack plugin) and a real gRPC peer playing auth.

The auth peer is a test peer, not a datastore: the kit's AuthService on a real socket
(`jwks_peer`, from the devstack plugin) that serves a JWKS built from a real Ed25519 key pair, so
chat fetches and verifies keys exactly as it will against auth. Tokens are minted here with the
private key.

Each test gets its own Mongo database, Redis prefix (fan-out channels included) and topic prefix.
The `chat` fixture is the running service plus the helpers tests share, since test modules
cannot import each other here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_chat.app import ChatApp
from aether_chat.config import ChatSettings
from aether_common.errors import AetherError
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import (
    AppRunner,
    Callers,
    JwksPeer,
    SigningKey,
    failure,
    new_key,
    read_topic,
)

if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = chat_pb2_grpc.ChatServiceAsyncStub
else:
    Stub = chat_pb2_grpc.ChatServiceStub

ISSUER = "aether-auth"  # chat's defaults, the same as the gateway's and auth's
AUDIENCE = "aether"
PUBLIC = chat_pb2.ROOM_VISIBILITY_PUBLIC
PRIVATE = chat_pb2.ROOM_VISIBILITY_PRIVATE


# -- tokens and the auth peer -------------------------------------------------------------------
def mint(key: SigningKey, sub: str, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    """An access token as auth issues them to a chat user (claims of None are left out)."""
    defaults = {"perms": ["chat:read", "chat:write"]}
    return testkit.mint(
        key,
        testkit.access_claims(issuer=ISSUER, audience=AUDIENCE, sub=sub, **(defaults | claims)),
        headers,
    )


@pytest.fixture(scope="session")
def fake_auth(jwks_peer: JwksPeer) -> JwksPeer:
    """The auth peer (tests change its `jwks` and count its `jwks_calls`)."""
    return jwks_peer


# -- the service -------------------------------------------------------------------------------
@pytest.fixture
def chat_settings(
    aether_endpoints: Endpoints,
    mongo_db_name: str,
    redis_prefix: str,
    topic_prefix: str,
    fake_auth: JwksPeer,
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
            "s3_endpoint": aether_endpoints.s3_endpoint,
            # The local S3 server takes any keys; "test" refuses the dev placeholders.
            "s3_access_key": "chat-tests",
            "s3_secret_key": "chat-tests-secret",
            # Its own bucket per test (made at the first archive run, as in dev).
            "s3_bucket": testkit.unique_name("aether-t-chat-"),
        }
    )


@dataclass
class Chat(Callers):
    """The running service and the helpers tests share."""

    app: ChatApp
    stub: Stub
    settings: ChatSettings
    key: SigningKey
    redis: Redis
    mongo: AsyncMongoClient[dict[str, Any]]
    tokens: dict[str, str] = field(default_factory=dict)

    PUBLIC = PUBLIC
    PRIVATE = PRIVATE

    def token(self, user_id: str, **claims: Any) -> str:
        return mint(self.key, user_id, **claims)

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
    runner = AppRunner()
    redis = Redis.from_url(chat_settings.redis_url, decode_responses=False)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        chat_settings.mongo_url, tz_aware=True
    )

    async def start(*, events: bool = False, consume: bool = False, **overrides: Any) -> Chat:
        settings = chat_settings.model_copy(update=overrides)
        app = ChatApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        await runner.start(app.components(events=events, consume=consume))
        stub: Stub = chat_pb2_grpc.ChatServiceStub(runner.connect(app.grpc.address, timeout=15))
        return Chat(app, stub, settings, signing_key, redis, mongo)

    yield start
    await runner.stop()
    await mongo.drop_database(chat_settings.mongo_database)
    await mongo.close()
    await testkit.delete_prefix(redis, redis_prefix)
    await redis.aclose()


@pytest.fixture
async def chat(start_chat: StartChat) -> Chat:
    return await start_chat()


# -- plain helpers (fixtures hand them out; test modules cannot import this file) -----------
@dataclass(frozen=True)
class Kit:
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    read_topic: Callable[..., Awaitable[list[Any]]]
    mint: Callable[..., str]
    new_key: Callable[[], SigningKey]


@pytest.fixture
def kit() -> Kit:
    return Kit(failure, read_topic, mint, new_key)
