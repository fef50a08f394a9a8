"""The memory service in-process on a free gRPC port, against the session's real servers
(PostgreSQL, Kafka and Qdrant's location from the devstack plugin) and two real gRPC peers:

- auth: the kit's AuthService (`jwks_peer`, from the devstack plugin) serving a JWKS built from
  a real Ed25519 key pair, so memory fetches and verifies keys exactly as it will against auth;
  tokens are minted here with the private key;
- chat: a ChatService answering CheckMembership from a table of room members. It verifies the
  forwarded token itself and answers for its subject, so a test passes only if memory forwards
  the caller's own token.

Each test gets its own PostgreSQL database, Qdrant collection prefix and Kafka topic prefix.
One local model is loaded for the session and shared by every app (`embedder=`).
The `memory` fixture is the running service plus the helpers tests share, since test modules
cannot import each other here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.errors import AetherError
from aether_common.grpc import GrpcServer, create_server
from aether_common.lifecycle import Component
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, Callers, JwksPeer, SigningKey, failure, new_key
from aether_memory.app import MemoryApp
from aether_memory.config import MemorySettings
from aether_memory.embeddings import LocalEmbedder

if TYPE_CHECKING:  # only the type stubs know the async stub class
    Stub = memory_pb2_grpc.MemoryServiceAsyncStub
else:
    Stub = memory_pb2_grpc.MemoryServiceStub

ISSUER = "aether-auth"
AUDIENCE = "aether"


# -- tokens and the auth peer -------------------------------------------------------------------
def mint(key: SigningKey, sub: str, **claims: Any) -> str:
    """An access token as auth issues them (a free user unless claims say otherwise)."""
    defaults = {"perms": ["memory:read"]}
    return testkit.mint(
        key, testkit.access_claims(issuer=ISSUER, audience=AUDIENCE, sub=sub, **(defaults | claims))
    )


@pytest.fixture(scope="session")
def auth_address(jwks_peer: JwksPeer) -> str:
    return jwks_peer.address


# -- the chat peer -----------------------------------------------------------------------------
@dataclass
class FakeChat:
    """Room members, and who asked (the verified subject of each forwarded token)."""

    public_key: Any
    members: dict[str, set[str]] = field(default_factory=dict)
    asked_by: list[str] = field(default_factory=list)
    address: str = ""

    def room(self, *member_ids: str) -> str:
        room_id = str(uuid.uuid4())
        self.members[room_id] = set(member_ids)
        return room_id


class _ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, fake: FakeChat) -> None:
        self._fake = fake

    async def CheckMembership(
        self, request: chat_pb2.CheckMembershipRequest, context: Any
    ) -> chat_pb2.CheckMembershipResponse:
        metadata = dict(context.invocation_metadata())
        raw = str(metadata.get("authorization", "")).removeprefix("Bearer ")
        try:
            claims = jwt.decode(raw, self._fake.public_key, algorithms=["EdDSA"], audience=AUDIENCE)
        except jwt.PyJWTError:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid token forwarded")
        user = claims["sub"]
        self._fake.asked_by.append(user)
        member_of = [r for r in request.room_ids if user in self._fake.members.get(r, set())]
        return chat_pb2.CheckMembershipResponse(member_of=member_of)


@pytest.fixture(scope="session")
async def chat_peer(signing_key: SigningKey) -> AsyncIterator[FakeChat]:
    fake = FakeChat(public_key=signing_key.private.public_key())
    server: GrpcServer = create_server("chat", host="127.0.0.1", port=0)
    server.add_service(
        chat_pb2_grpc.add_ChatServiceServicer_to_server,
        _ChatServicer(fake),  # type: ignore[abstract]  # CheckMembership is all we call
        chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    )
    await server.start()
    fake.address = server.address
    yield fake
    await server.stop(grace=0)


# -- the model, loaded once --------------------------------------------------------------------
@pytest.fixture(scope="session")
async def local_embedder() -> LocalEmbedder:
    embedder = LocalEmbedder()
    await embedder.start()
    return embedder


# -- the service -------------------------------------------------------------------------------
@pytest.fixture
def memory_settings(
    aether_endpoints: Endpoints,
    pg_dsn: str,
    topic_prefix: str,
    auth_address: str,
    chat_peer: FakeChat,
) -> MemorySettings:
    return MemorySettings.model_validate(
        {
            "environment": "test",
            "database_url": pg_dsn,
            "qdrant_location": aether_endpoints.qdrant_location,
            "collection_prefix": "t" + uuid.uuid4().hex[:10] + "_",
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "topic_prefix": topic_prefix,
            "auth_grpc_target": auth_address,
            "chat_grpc_target": chat_peer.address,
            "database_pool_size": 5,
        }
    )


@dataclass
class Memory(Callers):
    """The running service and the helpers tests share."""

    app: MemoryApp
    stub: Stub
    settings: MemorySettings
    key: SigningKey
    chat: FakeChat
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user_id: str, **claims: Any) -> str:
        return mint(self.key, user_id, **claims)

    async def upsert(
        self, caller: str, namespace: str, /, *records: memory_pb2.Record | str, **claims: Any
    ) -> memory_pb2.UpsertResponse:
        pbs = [memory_pb2.Record(text=r) if isinstance(r, str) else r for r in records]
        return await self.stub.Upsert(
            memory_pb2.UpsertRequest(namespace=namespace, records=pbs),
            metadata=self.auth(caller, **claims),
        )

    async def search(
        self, caller: str, namespace: str, query: str, /, **fields: Any
    ) -> list[memory_pb2.SearchHit]:
        """`claims={...}` mints a token with those claims; other keywords are request fields."""
        claims = fields.pop("claims", {})
        response = await self.stub.Search(
            memory_pb2.SearchRequest(namespace=namespace, query=query, **fields),
            metadata=self.auth(caller, **claims),
        )
        return list(response.hits)


StartMemory = Callable[..., Awaitable[Memory]]


@pytest.fixture
async def start_memory(
    memory_settings: MemorySettings,
    signing_key: SigningKey,
    chat_peer: FakeChat,
    local_embedder: LocalEmbedder,
) -> AsyncIterator[StartMemory]:
    """Start the service (the wiring of `python -m aether_memory`, gRPC on a free port).
    `events=True` also runs the consumer; settings can be overridden by keyword."""
    runner = AppRunner()

    async def start(*, events: bool = False, shared_model: bool = True, **overrides: Any) -> Memory:
        settings = memory_settings.model_copy(update=overrides)
        app = MemoryApp(
            settings,
            grpc_host="127.0.0.1",
            grpc_port=0,
            embedder=local_embedder if shared_model and settings.embedder == "local" else None,
        )

        async def drop_collections(started: list[Component]) -> None:
            if app.index in started:  # leave the session's index location as it was
                await app.index.drop()

        await runner.start(app.components(events=events), before_stop=drop_collections)
        channel = runner.connect(app.grpc.address, timeout=30)
        stub: Stub = memory_pb2_grpc.MemoryServiceStub(channel)
        return Memory(app, stub, settings, signing_key, chat_peer)

    yield start
    await runner.stop()


@pytest.fixture
async def memory(start_memory: StartMemory) -> Memory:
    return await start_memory()


# -- plain helpers (fixtures hand them out; test modules cannot import this file) -------------
@dataclass(frozen=True)
class Kit:
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    mint: Callable[..., str]
    new_key: Callable[[], SigningKey]


@pytest.fixture
def kit() -> Kit:
    return Kit(failure, mint, new_key)
