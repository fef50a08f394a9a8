"""The AI service in-process on a free gRPC port, against the session's real servers: PostgreSQL,
Redis, Kafka and the local LLM (llama.cpp's server with SmolLM2-135M) from the devstack plugin,
a real MemoryApp for RAG, and a real gRPC peer playing auth.

The auth peer is a test peer, not a datastore: the kit's AuthService on a real socket
(`jwks_peer`, from the devstack plugin) serving a JWKS built from a real Ed25519 key pair, so the
AI service (and the memory service) fetch and verify keys exactly as they will against auth.
Tokens are minted here.

Each test gets its own PostgreSQL database, Redis prefix (cache keys and the invalidation
channel) and topic prefix. Modes answer in at most 16 tokens here: the tests check structure and
behaviour, not the small model's wisdom. The `start_ai` fixture starts an app (several share the
test's database and Redis prefix, like replicas); test modules cannot import each other, so the
helpers come from fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_ai.app import AiApp
from aether_ai.config import DEFAULT_MODELS, DEFAULT_MODES, AiSettings
from aether_common.errors import AetherError
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import (
    AppRunner,
    Callers,
    JwksPeer,
    SigningKey,
    eventually,
    failure,
    fresh_database,
    stream_failure,
)

if TYPE_CHECKING:  # only the type stubs know the async stub classes
    Stub = ai_pb2_grpc.AiServiceAsyncStub
    MemoryStub = memory_pb2_grpc.MemoryServiceAsyncStub
else:
    Stub = ai_pb2_grpc.AiServiceStub
    MemoryStub = memory_pb2_grpc.MemoryServiceStub

ISSUER = "aether-auth"
AUDIENCE = "aether"
# Nothing listens here: RAG degrades at once unless a test starts the memory service.
NO_MEMORY = "127.0.0.1:9"
TEST_MAX_TOKENS = 16


# -- tokens and the auth peer -------------------------------------------------------------------
def mint(key: SigningKey, sub: str, **claims: Any) -> str:
    """An access token as auth issues them (a free user unless claims say otherwise)."""
    return testkit.mint(
        key, testkit.access_claims(issuer=ISSUER, audience=AUDIENCE, sub=sub, **claims)
    )


@pytest.fixture(scope="session")
def auth_address(jwks_peer: JwksPeer) -> str:
    return jwks_peer.address


# -- the service -------------------------------------------------------------------------------
@pytest.fixture
def llm_base_url(aether_endpoints: Endpoints) -> str:
    if not aether_endpoints.llm_base_url:
        pytest.skip("this backend runs no LLM server (AETHER_LLM_BASE_URL is empty)")
    return aether_endpoints.llm_base_url


@pytest.fixture
def ai_config(
    aether_endpoints: Endpoints,
    pg_dsn: str,
    redis_prefix: str,
    topic_prefix: str,
    auth_address: str,
    llm_base_url: str,
) -> dict[str, Any]:
    """The settings every test starts from (as a dict, so a test can change any of them)."""
    return {
        "environment": "test",
        "database_url": pg_dsn,
        "database_pool_size": 5,
        "redis_url": aether_endpoints.redis_url,
        "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
        "topic_prefix": topic_prefix,
        "auth_grpc_target": auth_address,
        "memory_grpc_target": NO_MEMORY,
        "memory_timeout_s": 2.0,
        "llm_base_url": llm_base_url,
        "cache_prefix": redis_prefix + "cache:",
        # Budgets and timeouts far above what any answer needs: the machine is shared and the
        # model slows down under load; tests must not depend on its speed.
        "modes": {
            name: {"max_tokens": TEST_MAX_TOKENS, "latency_budget_s": 300} for name in DEFAULT_MODES
        },
        "models": {name: {"timeout_s": 300} for name in DEFAULT_MODELS},
        "job_poll_s": 0.1,
    }


@dataclass
class Ai(Callers):
    """One running app (a replica) and the helpers tests share."""

    app: AiApp
    stub: Stub
    settings: AiSettings
    key: SigningKey
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user_id: str, **claims: Any) -> str:
        return mint(self.key, user_id, **claims)

    # -- calls -----------------------------------------------------------------------------
    async def chat(self, user_id: str, message: str, **fields: Any) -> list[ai_pb2.ChatResponse]:
        """Every event of one Chat call, in order."""
        call = self.stub.Chat(
            ai_pb2.ChatRequest(message=message, **fields), metadata=self.auth(user_id)
        )
        return [event async for event in call]

    async def analyze(self, user_id: str, **fields: Any) -> list[ai_pb2.AnalyzeResponse]:
        call = self.stub.Analyze(ai_pb2.AnalyzeRequest(**fields), metadata=self.auth(user_id))
        return [event async for event in call]

    async def chat_whole(
        self, user_id: str, message: str, **fields: Any
    ) -> ai_pb2.ChatWholeResponse:
        """One ChatWhole call (the unary whole answer)."""
        request = ai_pb2.ChatWholeRequest(request=ai_pb2.ChatRequest(message=message, **fields))
        answer: ai_pb2.ChatWholeResponse = await self.stub.ChatWhole(
            request, metadata=self.auth(user_id)
        )
        return answer

    async def analyze_whole(self, user_id: str, **fields: Any) -> ai_pb2.AnalyzeWholeResponse:
        request = ai_pb2.AnalyzeWholeRequest(request=ai_pb2.AnalyzeRequest(**fields))
        answer: ai_pb2.AnalyzeWholeResponse = await self.stub.AnalyzeWhole(
            request, metadata=self.auth(user_id)
        )
        return answer


StartAi = Callable[..., Awaitable[Ai]]


@pytest.fixture
async def start_ai(
    ai_config: dict[str, Any], signing_key: SigningKey, redis_prefix: str
) -> AsyncIterator[StartAi]:
    """Start an app with the wiring of `python -m aether_ai` (gRPC on a free port). Keywords
    change settings (validated again, so `modes={...}` merges like AI_MODES does)."""
    runner = AppRunner()

    async def start(*, events: bool = False, **overrides: Any) -> Ai:
        config = dict(ai_config)
        for key, value in overrides.items():
            if key in ("modes", "models"):  # per name and field, over the test's own values
                merged = {name: dict(fields) for name, fields in config[key].items()}
                for name, fields in value.items():
                    merged[name] = merged.get(name, {}) | fields
                config[key] = merged
            else:
                config[key] = value
        settings = AiSettings.model_validate(config)
        app = AiApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        await runner.start(app.components(events=events))
        stub: Stub = ai_pb2_grpc.AiServiceStub(runner.connect(app.grpc.address, timeout=60))
        return Ai(app, stub, settings, signing_key)

    yield start
    await runner.stop()
    redis = Redis.from_url(ai_config["redis_url"])
    await testkit.delete_prefix(redis, redis_prefix)
    await redis.aclose()


@pytest.fixture
async def ai(start_ai: StartAi) -> Ai:
    return await start_ai()


# -- the memory service (RAG) --------------------------------------------------------------------
@pytest.fixture(scope="session")
async def local_embedder() -> Any:
    """One loaded embedding model for the whole session (the memory service's own)."""
    from aether_memory.embeddings import LocalEmbedder

    embedder = LocalEmbedder()
    await embedder.start()
    return embedder


@pytest.fixture
async def memory_dsn(aether_endpoints: Endpoints) -> AsyncIterator[str]:
    """The memory service's own database (services never share one)."""
    async with fresh_database(aether_endpoints.postgres_dsn, "aether_t_mem_") as dsn:
        yield dsn


@dataclass
class Memory:
    """A running memory service and a client to seed it."""

    address: str
    stub: MemoryStub
    key: SigningKey

    async def upsert(
        self, user_id: str, namespace: str, records: dict[str, str], *, admin: bool = False
    ) -> None:
        claims: dict[str, Any] = {"roles": ["admin"]} if admin else {}
        token = mint(self.key, user_id, **claims)
        await self.stub.Upsert(
            memory_pb2.UpsertRequest(
                namespace=namespace,
                records=[memory_pb2.Record(id=i, text=t) for i, t in records.items()],
            ),
            metadata=(("authorization", f"Bearer {token}"),),
        )


@pytest.fixture
async def memory(
    aether_endpoints: Endpoints,
    memory_dsn: str,
    auth_address: str,
    signing_key: SigningKey,
    local_embedder: Any,
) -> AsyncIterator[Memory]:
    from aether_memory.app import MemoryApp
    from aether_memory.config import MemorySettings

    settings = MemorySettings.model_validate(
        {
            "environment": "test",
            "database_url": memory_dsn,
            "qdrant_location": ":memory:",
            "collection_prefix": "t" + uuid.uuid4().hex[:10] + "_",
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "auth_grpc_target": auth_address,
            "chat_grpc_target": NO_MEMORY,  # the "chat" namespace is not used here
            "database_pool_size": 3,
        }
    )
    app = MemoryApp(settings, grpc_host="127.0.0.1", grpc_port=0, embedder=local_embedder)
    runner = AppRunner()
    try:
        await runner.start(app.components(events=False))
        channel = runner.connect(app.grpc.address, timeout=30)
        yield Memory(app.grpc.address, memory_pb2_grpc.MemoryServiceStub(channel), signing_key)
    finally:
        await runner.stop()


# -- the charts service (analysis by symbol) -----------------------------------------------------
CHARTS_SYMBOL = "ACME"


def acme_csv(days: int = 300) -> str:
    """A labelled synthetic daily series (tests only): trending, oscillating, deterministic."""
    import math
    from datetime import date, timedelta

    rows = ["time,open,high,low,close,volume"]
    for n in range(days):
        close = 100 + n * 0.2 + 5 * math.sin(n / 7)
        day = date(2023, 1, 2) + timedelta(days=n)
        rows.append(f"{day},{close - 0.3},{close + 1},{close - 1},{close},{1000 + n}")
    return "\n".join(rows) + "\n"


@pytest.fixture
async def charts_target(aether_endpoints: Endpoints, auth_address: str) -> AsyncIterator[str]:
    """A running charts service (its own database) holding ACME's 300 daily bars."""
    from aether_charts.app import ChartsApp
    from aether_charts.config import ChartsSettings

    async with fresh_database(aether_endpoints.postgres_dsn, "aether_t_charts_") as dsn:
        settings = ChartsSettings.model_validate(
            {
                # dev: the local S3 server's keys are placeholders, which other environments
                # refuse (charts keeps its chart images there).
                "environment": "dev",
                "s3_endpoint": aether_endpoints.s3_endpoint,
                "s3_access_key": aether_endpoints.s3_access_key,
                "s3_secret_key": aether_endpoints.s3_secret_key,
                "s3_bucket": testkit.unique_name("aether-t-charts-"),
                "database_url": dsn,
                "auth_grpc_target": auth_address,
                "load_bundled": False,
                "database_pool_size": 3,
                "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
                "redis_url": aether_endpoints.redis_url,
                "cache_prefix": testkit.unique_name("t-charts-cache-") + ":",
            }
        )
        app = ChartsApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        runner = AppRunner()
        try:
            await runner.start(app.components(events=False))
            await app.service.import_file(
                app.database, CHARTS_SYMBOL, acme_csv().encode(), name="Acme", timezone="UTC"
            )
            yield app.grpc.address
        finally:
            await runner.stop()


# -- plain helpers (fixtures hand them out; test modules cannot import this file) -----------
def metric(name: str, **labels: str) -> float:
    """A sample of the process's Prometheus registry (0 when never observed)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def kinds(events: Iterable[Any]) -> list[str]:
    """The event kinds of a stream, in order (`started`, `chunk`, `sources`, `done`)."""
    return [event.WhichOneof("event") for event in events]


def text_of(events: Iterable[Any], agent: str | None = None) -> str:
    return "".join(
        e.chunk.content
        for e in events
        if e.WhichOneof("event") == "chunk" and (agent is None or e.chunk.agent == agent)
    )


@dataclass(frozen=True)
class Kit:
    failure: Callable[[Awaitable[Any]], Awaitable[AetherError]]
    stream_failure: Callable[[Any], Awaitable[AetherError]]
    metric: Callable[..., float]
    eventually: Callable[..., Awaitable[None]]
    kinds: Callable[[Iterable[Any]], list[str]]
    text_of: Callable[..., str]


@pytest.fixture
def kit() -> Kit:
    return Kit(failure, stream_failure, metric, eventually, kinds, text_of)
