"""A real gateway app against real Redis and a real gRPC peer playing auth.

`FakeAuth` is a test peer, not a datastore: the kit's `ScriptedPeer` (an AuthService on a real
socket, the shared `create_server`, so errors cross the wire exactly as auth's will) that serves
a JWKS built from real key pairs and answers every other RPC with what a test scripted, recording
each call and its metadata. Tokens are minted here with the matching private keys (the kit's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt as pyjwt
import pytest
import uvicorn
from google.protobuf.message import Message
from redis.asyncio import Redis

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether.worker.v1 import worker_pb2, worker_pb2_grpc
from aether_common.errors import (
    AetherError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ValidationFailed,
)
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import (
    ScriptedPeer,
    SigningKey,
    access_claims,
    new_key,
    rsa_key,
    serve,
)
from aether_gateway.app import create_app
from aether_gateway.config import GatewaySettings

ISSUER = "https://auth.aether.test"
AUDIENCE = "aether-test"
AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
CLIENT_IP = "203.0.113.7"


# -- keys and tokens -------------------------------------------------------------------------------
def claims(**overrides: Any) -> dict[str, Any]:
    """An access token's claims as auth issues them; an override of None drops the claim."""
    return access_claims(issuer=ISSUER, audience=AUDIENCE, **({"email_verified": True} | overrides))


def mint(key: SigningKey, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    return testkit.mint(key, claims(**overrides), headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def rsa_signing_key() -> SigningKey:
    return rsa_key()


# -- the auth peer ---------------------------------------------------------------------------------
@dataclass
class FakeAuth(ScriptedPeer):
    """What the fake AuthService serves (`jwks`, and what tests scripted), and what it was asked."""

    jwks: list[dict[str, Any]] = field(default_factory=list)

    async def answer(self, method: str, request: Any) -> Message:
        if method == "GetJwks":
            return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": self.jwks}))
        return await super().answer(method, request)


@pytest.fixture
async def fake_auth(signing_key: SigningKey) -> AsyncIterator[FakeAuth]:
    fake = FakeAuth(AUTH_SERVICE, jwks=[signing_key.jwk])
    servicer = fake.servicer(auth_pb2_grpc.AuthServiceServicer)
    async with serve(
        "auth", auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer, AUTH_SERVICE
    ) as fake.address:
        yield fake


# -- Redis -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url(aether_endpoints: Endpoints) -> str:
    return aether_endpoints.redis_url


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[Redis]:
    """A client for the test to look at (and seed) the keys under its own prefix."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await testkit.delete_prefix(client, redis_prefix)
    await client.aclose()


# -- the gateway -----------------------------------------------------------------------------------
GatewayFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
def settings_for(redis_url: str, redis_prefix: str) -> Callable[..., GatewaySettings]:
    def make(auth_target: str, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "environment": "test",
            "redis_url": redis_url,
            "auth_grpc_target": auth_target,
            "redis_key_prefix": redis_prefix + "gw:",
            "revocation_key_prefix": redis_prefix + "auth:revoked:",
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwt_leeway_s": 0,
            "redis_cooldown_s": 0,
            "auth_timeout_s": 2.0,
        }
        return GatewaySettings(**(values | overrides))

    return make


@pytest.fixture
async def start_gateway(
    fake_auth: FakeAuth, redis: Redis, settings_for: Callable[..., GatewaySettings]
) -> AsyncIterator[GatewayFactory]:
    """Start a gateway app (lifespan run) with setting overrides; an httpx client to it."""
    stack: list[tuple[Any, httpx.AsyncClient]] = []

    async def start(
        *, client_ip: str = CLIENT_IP, base_url: str = "http://gateway.test", **overrides: Any
    ) -> httpx.AsyncClient:
        target = overrides.pop("auth_grpc_target", fake_auth.address)
        app = create_app(settings_for(target, **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        transport = httpx.ASGITransport(app=app, client=(client_ip, 50000))
        client = httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30)
        stack.append((lifespan, client))
        return client

    yield start
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> httpx.AsyncClient:
    return await start_gateway()


@pytest.fixture
def token(signing_key: SigningKey) -> Callable[..., str]:
    """`token(plan="premium", perms=[...])`: a valid access token with those claims."""

    def make(**overrides: Any) -> str:
        return mint(signing_key, **overrides)

    return make


def user_message(user_id: str = "u-1", **overrides: Any) -> auth_pb2.User:
    values: dict[str, Any] = {
        "id": user_id,
        "email": "ada@example.com",
        "email_verified": True,
        "display_name": "Ada",
        "plan": auth_pb2.PLAN_FREE,
        "role": auth_pb2.ROLE_USER,
        "permissions": ["profile:read"],
        "mfa_enabled": False,
        "oauth_providers": ["github"],
    }
    return auth_pb2.User(**(values | overrides))


def token_pair(access: str = "at", refresh: str = "rt") -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=access,
        refresh_token=refresh,
        token_type="Bearer",
        expires_in=900,
        refresh_expires_in=2_592_000,
    )


def assert_error_shape(response: httpx.Response, status: int, error: str | None = None) -> str:
    """The one error body; returns its detail for further checks."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "status_code"}, body
    assert body["status_code"] == status
    if error is not None:
        assert body["error"] == error, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return str(body["detail"])


# -- the helpers above, as fixtures (test modules cannot import conftest under importlib mode) -----
@pytest.fixture
def mint_token() -> Callable[..., str]:
    """`mint_token(key, headers={...}, **claims)`."""
    return mint


@pytest.fixture(name="new_key")
def new_key_fixture() -> Callable[..., SigningKey]:
    """`new_key("EdDSA" | "RS256", kid=None)`: a fresh key pair."""
    return new_key


@pytest.fixture
def make_user() -> Callable[..., auth_pb2.User]:
    return user_message


@pytest.fixture
def make_tokens() -> Callable[..., auth_pb2.TokenPair]:
    return token_pair


@pytest.fixture
def error_shape() -> Callable[..., str]:
    """`error_shape(response, status, error=None)`: asserts the one error body, returns detail."""
    return assert_error_shape


# -- chat (the chat tests: test_chat_*.py) ---------------------------------------------------------
CHAT_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


@pytest.fixture
async def fake_chat() -> AsyncIterator[ScriptedPeer]:
    """A ChatService peer for the gateway's own tests (edge cases, hub logic); the integration
    tests (test_chat_integration.py) run against the real chat service instead."""
    fake = ScriptedPeer(CHAT_SERVICE)
    servicer = fake.servicer(chat_pb2_grpc.ChatServiceServicer)
    async with serve(
        "chat", chat_pb2_grpc.add_ChatServiceServicer_to_server, servicer, CHAT_SERVICE
    ) as fake.address:
        yield fake


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers (pytest owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ServedGateway:
    """A gateway app served by a real uvicorn on a free port (WebSocket tests)."""

    app: Any
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/chat/connect"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resources(self) -> Any:
        return self.app.state.gateway

    async def stop(self) -> None:
        if not self.task.done():
            self.server.should_exit = True
            await self.task


ServeGateway = Callable[..., Awaitable[ServedGateway]]


@pytest.fixture
async def serve_gateway(
    fake_auth: FakeAuth,
    redis: Redis,
    redis_prefix: str,
    settings_for: Callable[..., GatewaySettings],
) -> AsyncIterator[ServeGateway]:
    """`await serve_gateway(chat_grpc_target=..., **settings)`: a gateway on a real socket."""
    served: list[ServedGateway] = []

    async def start(**overrides: Any) -> ServedGateway:
        target = overrides.pop("auth_grpc_target", fake_auth.address)
        # This test's own channels, as chat is configured in the tests (chat_fanout_prefix).
        overrides.setdefault("chat_fanout_prefix", redis_prefix + "chat:fanout:")
        overrides.setdefault("alerts_notify_prefix", redis_prefix + "alerts:notify:")
        app = create_app(settings_for(target, **overrides))
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_config=None,
            access_log=False,
            ws_per_message_deflate=False,
        )
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        gateway = ServedGateway(app, server, task, port)
        served.append(gateway)
        return gateway

    yield start
    for gateway in reversed(served):
        await gateway.stop()


@pytest.fixture
def chat_fanout_prefix(redis_prefix: str) -> str:
    """The fan-out prefix `serve_gateway` gives the gateway (and the tests give chat)."""
    return redis_prefix + "chat:fanout:"


@pytest.fixture
def alerts_notify_prefix(redis_prefix: str) -> str:
    """The notification prefix `serve_gateway` gives the gateway (and the tests give alerts)."""
    return redis_prefix + "alerts:notify:"


@pytest.fixture
def token_issuer_audience() -> tuple[str, str]:
    """(iss, aud) of the tokens minted here: what a real chat service must expect."""
    return ISSUER, AUDIENCE


# -- ai and memory (the AI tests: test_ai_*.py, test_memory_*.py) ----------------------------------
AI_SERVICE = ai_pb2.DESCRIPTOR.services_by_name["AiService"]
MEMORY_SERVICE = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"]
AI_STREAMS = frozenset(("Chat", "Analyze"))
AI_WHOLE = {"ChatWhole": "Chat", "AnalyzeWhole": "Analyze"}  # whole answer -> its stream
# In a scripted stream: wait here until the client cancels the call.
HOLD = object()
StreamScript = list[Any] | AetherError | Callable[[Any], AsyncIterator[Any]]


def ai_answer_events(
    text: str = "Hello world", *, response: type[Message] = ai_pb2.ChatResponse
) -> list[Message]:
    """A whole streamed answer: started, one chunk per word, done (with usage)."""
    words = text.split(" ")
    chunks = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
    usage = ai_pb2.Usage(
        prompt_tokens=12,
        completion_tokens=len(chunks),
        total_tokens=12 + len(chunks),
        cost_usd=0.25,
        latency_ms=40,
        first_token_ms=10,
        model="smollm2-135m",
    )
    return [
        response(
            started=ai_pb2.Started(
                request_id="req-1", conversation_id="conv-1", mode="fast", model="smollm2-135m"
            )
        ),
        *(response(chunk=ai_pb2.Chunk(content=c)) for c in chunks),
        response(done=ai_pb2.Done(answer=text, usage=usage, finish_reason="stop")),
    ]


@dataclass
class FakeAi(ScriptedPeer):
    """An AiService peer for the gateway's own tests. Unary RPCs answer like any ScriptedPeer;
    Chat/Analyze stream `streams[name]`: a list of events (an AetherError in it fails the call
    there, HOLD waits until the client cancels), an AetherError, or a callable giving an async
    iterator. ChatWhole/AnalyzeWhole, unless scripted in `answers`, answer with the whole of
    what Chat/Analyze would stream, as the service does."""

    streams: dict[str, StreamScript] = field(default_factory=dict)
    streaming_event: asyncio.Event = field(default_factory=asyncio.Event)
    streaming: frozenset[str] = AI_STREAMS

    async def wait_streaming(self) -> None:
        """Until a Chat/Analyze call has reached the peer."""
        async with asyncio.timeout(5.0):
            await self.streaming_event.wait()

    async def answer(self, method: str, request: Any) -> Message:
        if method not in AI_WHOLE or method in self.answers:
            return await super().answer(method, request)
        message: Any = self.empty_response(method)
        self.streaming_event.set()
        async for event in self.stream(AI_WHOLE[method], request.request):
            kind = event.WhichOneof("event")
            if kind == "sources":
                message.sources.extend(event.sources.sources)
            elif kind != "chunk":
                getattr(message, kind).CopyFrom(getattr(event, kind))
        answer: Message = message
        return answer

    async def stream(self, method: str, request: Any) -> AsyncIterator[Any]:
        if method in AI_STREAMS:
            self.streaming_event.set()
        response = ai_pb2.ChatResponse if method == "Chat" else ai_pb2.AnalyzeResponse
        scripted = self.streams.get(method)
        if scripted is None:
            scripted = ai_answer_events(response=response)
        if isinstance(scripted, AetherError):
            raise scripted
        if callable(scripted):
            async for item in scripted(request):
                yield item
            return
        for item in scripted:
            if item is HOLD:
                await asyncio.Event().wait()
            elif isinstance(item, AetherError):
                raise item
            else:
                yield item


@pytest.fixture
async def fake_ai() -> AsyncIterator[FakeAi]:
    fake = FakeAi(AI_SERVICE)
    servicer = fake.servicer(ai_pb2_grpc.AiServiceServicer)
    async with serve(
        "ai", ai_pb2_grpc.add_AiServiceServicer_to_server, servicer, AI_SERVICE
    ) as fake.address:
        yield fake


@pytest.fixture
async def fake_memory() -> AsyncIterator[ScriptedPeer]:
    """A MemoryService peer: answers what a test scripted, records each call."""
    fake = ScriptedPeer(MEMORY_SERVICE)
    servicer = fake.servicer(memory_pb2_grpc.MemoryServiceServicer)
    async with serve(
        "memory", memory_pb2_grpc.add_MemoryServiceServicer_to_server, servicer, MEMORY_SERVICE
    ) as fake.address:
        yield fake


@pytest.fixture
def ai_events() -> Callable[..., list[Message]]:
    """`ai_events("Hello world", response=ai_pb2.AnalyzeResponse)`: a whole streamed answer."""
    return ai_answer_events


@pytest.fixture
def hold() -> object:
    """Put in a FakeAi stream script: the stream waits there until the client cancels."""
    return HOLD


# -- charts (test_charts_routes.py) ----------------------------------------------------------------
CHARTS_SERVICE = charts_pb2.DESCRIPTOR.services_by_name["ChartsService"]


@pytest.fixture
async def fake_charts() -> AsyncIterator[ScriptedPeer]:
    """A ChartsService peer: answers what a test scripted, records each call."""
    fake = ScriptedPeer(CHARTS_SERVICE)
    servicer = fake.servicer(charts_pb2_grpc.ChartsServiceServicer)
    async with serve(
        "charts", charts_pb2_grpc.add_ChartsServiceServicer_to_server, servicer, CHARTS_SERVICE
    ) as fake.address:
        yield fake


# -- worker (the jobs tests: test_jobs_*.py) -------------------------------------------------------
WORKER_SERVICE = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"]
USER_JOB_TYPES = frozenset({"backtest", "chart.render", "ai.generate", "gdpr.export", "noop"})
OPERATOR_JOB_TYPES = frozenset({"memory.reindex", "retention.archive"})
FINAL_JOB_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass
class FakeWorker(ScriptedPeer):
    """A WorkerService peer holding its jobs in a dict, behaving as worker.proto says: the owner
    is the token's subject, another user's job is NOT_FOUND, users submit only the user types,
    `backtest` needs `params.symbol`, at most `quota` unfinished jobs per user, the same
    idempotency key answers the first job, a finished job refuses a cancel, WatchJob streams the
    job now and on every change until a final status, the dead-letter RPCs need the admin role.
    A test moves a job on with `update()` (as a runner would). What `answers` scripts wins."""

    jobs: dict[str, worker_pb2.Job] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    quota: int = 3
    streaming: frozenset[str] = frozenset({"WatchJob"})
    _keys: dict[tuple[str, str], str] = field(default_factory=dict)
    _versions: dict[str, int] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # -- what a test does ----------------------------------------------------------------------
    def add(self, owner: str, type_: str = "noop", **fields: Any) -> worker_pb2.Job:
        """A job of `owner`'s as if submitted earlier (newest last)."""
        job = worker_pb2.Job(
            id=str(uuid.uuid4()),
            type=type_,
            params_json=fields.pop("params_json", "{}"),
            owner_id=owner,
            status="queued",
            max_attempts=3,
            **fields,
        )
        job.created_at.FromDatetime(datetime.now(UTC))
        job.updated_at.CopyFrom(job.created_at)
        self.jobs[job.id] = job
        self._versions[job.id] = 0
        return job

    async def update(self, job_id: str, **fields: Any) -> worker_pb2.Job:
        """Change a job (status, progress...) and wake its watchers."""
        async with self._changed:
            job = self.jobs[job_id]
            for name, value in fields.items():
                if isinstance(value, Message):
                    getattr(job, name).CopyFrom(value)
                elif isinstance(value, list):
                    del getattr(job, name)[:]
                    getattr(job, name).extend(value)
                else:
                    setattr(job, name, value)
            job.updated_at.FromDatetime(datetime.now(UTC))
            if job.status in FINAL_JOB_STATUSES:
                job.finished_at.CopyFrom(job.updated_at)
            self._versions[job_id] += 1
            self._changed.notify_all()
            return job

    # -- the RPCs ------------------------------------------------------------------------------
    def _caller(self) -> tuple[str, frozenset[str]]:
        # The call being answered was recorded just before (no await in between).
        token = self.calls[-1].metadata["authorization"].removeprefix("Bearer ")
        claims = pyjwt.decode(token, options={"verify_signature": False})
        return claims["sub"], frozenset(claims.get("roles", ()))

    def _own(self, job_id: str, owner: str) -> worker_pb2.Job:
        job = self.jobs.get(job_id)
        if job is None or job.owner_id != owner:
            raise NotFound(f"no job {job_id}", code="job_not_found")
        return job

    async def answer(self, method: str, request: Any) -> Message:
        if method in self.answers:
            return await super().answer(method, request)
        owner, roles = self._caller()
        if method == "SubmitJob":
            return self._submit(request, owner)
        if method == "GetJob":
            return worker_pb2.GetJobResponse(job=self._own(request.id, owner))
        if method == "ListJobs":
            mine = [
                j
                for j in reversed(self.jobs.values())
                if j.owner_id == owner
                and request.status in ("", j.status)
                and request.type in ("", j.type)
            ]
            page, cursor = _page(mine, request.limit, request.cursor)
            return worker_pb2.ListJobsResponse(jobs=page, next_cursor=cursor)
        if method == "CancelJob":
            return worker_pb2.CancelJobResponse(job=await self._cancel(request.id, owner))
        if "admin" not in roles:
            raise Forbidden("operators only", code="operators_only")
        if method == "ListDeadJobs":
            dead = [
                j
                for j in reversed(self.jobs.values())
                if j.id in self.dead and request.type in ("", j.type)
            ]
            page, cursor = _page(dead, request.limit, request.cursor)
            return worker_pb2.ListDeadJobsResponse(jobs=page, next_cursor=cursor)
        if method == "ReplayDeadJob":
            if request.id not in self.dead:
                raise NotFound(f"no dead job {request.id}", code="job_not_found")
            self.dead.discard(request.id)
            job = await self.update(request.id, status="queued", attempts=0)
            job.ClearField("error")
            job.ClearField("finished_at")
            return worker_pb2.ReplayDeadJobResponse(job=job)
        return await super().answer(method, request)

    def _submit(self, request: worker_pb2.SubmitJobRequest, owner: str) -> Message:
        if request.type not in USER_JOB_TYPES | OPERATOR_JOB_TYPES:
            raise ValidationFailed(
                f"type: unknown job type {request.type!r}", field_errors={"type": "unknown"}
            )
        if request.type not in USER_JOB_TYPES:
            raise Forbidden(f"users may not submit {request.type} jobs", code="job_type_refused")
        params = json.loads(request.params_json)
        if request.type == "backtest" and "symbol" not in params:
            raise ValidationFailed(
                "params.symbol: field required", field_errors={"params.symbol": "required"}
            )
        key = (owner, request.idempotency_key)
        if request.idempotency_key and key in self._keys:
            return worker_pb2.SubmitJobResponse(job=self.jobs[self._keys[key]], created=False)
        mine = [j for j in self.jobs.values() if j.owner_id == owner]
        unfinished = sum(1 for j in mine if j.status not in FINAL_JOB_STATUSES)
        if unfinished >= self.quota:
            raise RateLimited(
                f"quota: the plan allows {self.quota} unfinished jobs",
                code="job_quota_exceeded",
                metadata={"limit": str(self.quota)},
            )
        job = self.add(
            owner, request.type, params_json=request.params_json, priority=request.priority
        )
        if request.idempotency_key:
            self._keys[key] = job.id
        return worker_pb2.SubmitJobResponse(job=job, created=True)

    async def _cancel(self, job_id: str, owner: str) -> worker_pb2.Job:
        job = self._own(job_id, owner)
        if job.status in FINAL_JOB_STATUSES:
            raise PreconditionFailed(f"job {job_id} already {job.status}")
        if job.status == "queued":
            return await self.update(
                job_id, status="cancelled", error=worker_pb2.JobError(code="cancelled")
            )
        return await self.update(job_id, cancel_requested=True)

    async def stream(self, method: str, request: Any) -> AsyncIterator[Any]:
        owner, _ = self._caller()
        self._own(request.id, owner)
        seen = -1

        def changed() -> bool:
            return self._versions[request.id] != seen

        while True:
            async with self._changed:
                await self._changed.wait_for(changed)
                seen = self._versions[request.id]
                job = worker_pb2.Job()
                job.CopyFrom(self.jobs[request.id])
            yield worker_pb2.WatchJobResponse(job=job)
            if job.status in FINAL_JOB_STATUSES:
                return


def _page(jobs: list[worker_pb2.Job], limit: int, cursor: str) -> tuple[list[worker_pb2.Job], str]:
    start = int(cursor or 0)
    end = start + (limit or 50)
    return jobs[start:end], str(end) if end < len(jobs) else ""


@pytest.fixture
async def fake_worker() -> AsyncIterator[FakeWorker]:
    fake = FakeWorker(WORKER_SERVICE)
    servicer = fake.servicer(worker_pb2_grpc.WorkerServiceServicer)
    async with serve(
        "worker", worker_pb2_grpc.add_WorkerServiceServicer_to_server, servicer, WORKER_SERVICE
    ) as fake.address:
        yield fake
