"""`ai.generate` against a real ai service (in-process, the local model from the devstack) and a
real auth (in-process, its own database) that lists the worker as a service client: the handler
gets the worker's service token with the kit's ServiceCredentials and asks ai as the job's
owner. The job's result is the JSON `POST /api/ai/chat` answers (the gateway's own converter on
the same ChatWhole response), the usage and the conversation are the owner's (read with the
owner's own token from auth), and failures are retryable or not as ai's answer says.

The JobContext is a double of our own interface (the job system itself is tested elsewhere);
everything it stands between is real.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_ai.app import AiApp
from aether_ai.config import DEFAULT_MODELS, DEFAULT_MODES, AiSettings
from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings
from aether_common.service_tokens import ServiceCredentials
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, fresh_database
from aether_gateway.ai import convert
from aether_gateway.ai.schemas import AnswerOut
from aether_worker.ai_client import AiClient
from aether_worker.ai_generate import ChatParams, ai_generate_job
from aether_worker.handler import JobCancelled, JobFailed, JobType

if TYPE_CHECKING:  # only the type stubs know the async stub class
    AuthStub = auth_pb2_grpc.AuthServiceAsyncStub
else:
    AuthStub = auth_pb2_grpc.AuthServiceStub

WORKER_SECRET = secrets.token_urlsafe(32)
PASSWORD = "correct horse battery staple"
MAX_TOKENS = 16
# Nothing listens here: ai answers without RAG, and a client pointed here finds ai away.
NOWHERE = "127.0.0.1:9"


# -- the double of the job system's side -------------------------------------------------------
@dataclass
class Attempt:
    """A JobContext for one attempt of a job owned by `owner_id`; `cancel_after` checkpoints
    (progress counts as one) it answers as a cancelled job would."""

    owner_id: str
    job_id: str = "job-1"
    attempt: int = 1
    cancel_after: int | None = None
    checkpoints: int = 0
    progress_seen: list[tuple[int, str]] = field(default_factory=list)

    async def progress(self, percent: int, message: str = "") -> None:
        self.progress_seen.append((percent, message))
        await self.checkpoint()

    async def checkpoint(self) -> None:
        self.checkpoints += 1
        if self.cancel_after is not None and self.checkpoints > self.cancel_after:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    async def put_artifact(self, name: str, data: bytes, content_type: str) -> None:
        raise AssertionError("ai.generate stores no artifacts")


async def run(job: JobType, ctx: Attempt, params: dict[str, Any]) -> dict[str, Any]:
    """One attempt as the runner makes it: params validated by the type's model, then run."""
    return await job.run(ctx, job.params.model_validate(params))


class RecordingAiClient(AiClient):
    """The real client, keeping each ChatWhole response it got (to convert it the gateway's
    way and compare)."""

    answers: list[ai_pb2.ChatWholeResponse]

    async def chat_whole(
        self, request: ai_pb2.ChatRequest, *, user_id: str, service: str, token: str
    ) -> ai_pb2.ChatWholeResponse:
        answer = await super().chat_whole(request, user_id=user_id, service=service, token=token)
        self.answers.append(answer)
        return answer


# -- real auth, real ai --------------------------------------------------------------------------
@dataclass
class Platform:
    auth: AuthStub
    auth_address: str
    runner: AppRunner

    async def user(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """A registered user's id and their own call metadata (an access token from auth)."""
        email = f"{testkit.unique_name('ada-')}@example.com"
        registered = await self.auth.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Ada")
        )
        login = await self.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
        assert login.WhichOneof("result") == "tokens", login
        return registered.user.id, testkit.bearer_metadata(login.tokens.access_token)


@pytest.fixture
async def platform(
    aether_endpoints: Endpoints, auth_listing_worker: Callable[[str, str], AuthSettings]
) -> AsyncIterator[Platform]:
    """A real auth whose service clients include the worker (as AUTH_SERVICE_CLIENTS lists it)."""
    async with fresh_database(aether_endpoints.postgres_dsn) as dsn:
        settings = auth_listing_worker(dsn, WORKER_SECRET)
        app = AuthApp(settings, grpc_host="127.0.0.1", grpc_port=0)
        runner = AppRunner()
        try:
            await runner.start(app.components(events=False))
            stub: AuthStub = auth_pb2_grpc.AuthServiceStub(
                runner.connect(app.grpc.address, timeout=30)
            )
            yield Platform(stub, app.grpc.address, runner)
        finally:
            await runner.stop()


StartAi = Callable[..., Awaitable[ai_pb2_grpc.AiServiceStub]]


@pytest.fixture
async def start_ai(
    platform: Platform, aether_endpoints: Endpoints, pg_dsn: str, redis_prefix: str
) -> AsyncIterator[Callable[..., Awaitable[tuple[AiApp, Any]]]]:
    """Start ai (the wiring of `python -m aether_ai`) verifying tokens against the real auth."""
    if not aether_endpoints.llm_base_url:
        pytest.skip("this backend runs no LLM server (AETHER_LLM_BASE_URL is empty)")
    runner = AppRunner()

    async def start(**overrides: Any) -> tuple[AiApp, Any]:
        modes = {
            name: {"max_tokens": MAX_TOKENS, "latency_budget_s": 300} for name in DEFAULT_MODES
        }
        modes.update(overrides.pop("modes", {}))
        config = {
            "environment": "test",
            "database_url": pg_dsn,
            "database_pool_size": 4,
            "redis_url": aether_endpoints.redis_url,
            "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
            "topic_prefix": testkit.unique_name("t-ai-") + ".",
            "auth_grpc_target": platform.auth_address,
            "memory_grpc_target": NOWHERE,
            "memory_timeout_s": 2.0,
            "llm_base_url": aether_endpoints.llm_base_url,
            "cache_prefix": redis_prefix + "cache:",
            "modes": modes,
            "models": {name: {"timeout_s": 300} for name in DEFAULT_MODELS},
            **overrides,
        }
        app = AiApp(AiSettings.model_validate(config), grpc_host="127.0.0.1", grpc_port=0)
        await runner.start(app.components(events=False))
        return app, ai_pb2_grpc.AiServiceStub(runner.connect(app.grpc.address, timeout=60))

    yield start
    await runner.stop()


@pytest.fixture
async def credentials(platform: Platform) -> AsyncIterator[ServiceCredentials]:
    """The worker's own identity, built as WorkerApp builds it."""
    creds = ServiceCredentials(platform.auth_address, "worker", WORKER_SECRET, timeout_s=5)
    await creds.start()
    yield creds
    await creds.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], AiClient]]:
    made: list[AiClient] = []

    def make(target: str) -> RecordingAiClient:
        client = RecordingAiClient(target, timeout_s=10, answer_timeout_s=120)
        client.answers = []
        client.open()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.stop()


async def usage(ai: Any, metadata: tuple[tuple[str, str], ...]) -> ai_pb2.GetUsageResponse:
    answer: ai_pb2.GetUsageResponse = await ai.GetUsage(ai_pb2.GetUsageRequest(), metadata=metadata)
    return answer


# -- tests ---------------------------------------------------------------------------------------
async def test_the_result_is_the_chat_answer_recorded_for_the_owner(
    platform: Platform, start_ai: Any, credentials: ServiceCredentials, clients: Any
) -> None:
    app, ai = await start_ai()
    client = clients(app.grpc.address)
    job = ai_generate_job(client, credentials)
    alice, as_alice = await platform.user()

    result = await run(job, Attempt(alice), {"message": "  What is a stock?  ", "mode": "fast"})

    # Exactly what `POST /api/ai/chat` answers for that ChatWhole response (the gateway's code).
    [answer] = client.answers
    gateway_json = AnswerOut.model_validate(convert.whole(answer)).model_dump(mode="json")
    assert result == gateway_json
    assert result["answer"].strip()
    assert (result["mode"], result["cached"], result["agents"]) == ("fast", False, [])
    assert result["usage"]["completion_tokens"] > 0
    # Alice's, read with her own token: her usage grew by this answer, the conversation is hers.
    mine = await usage(ai, as_alice)
    assert mine.requests == 1
    assert mine.completion_tokens == result["usage"]["completion_tokens"]
    conversation = await ai.GetConversation(
        ai_pb2.GetConversationRequest(conversation_id=result["conversation_id"]),
        metadata=as_alice,
    )
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "What is a stock?"),
        ("assistant", result["answer"]),
    ]
    # The cache is the one her synchronous chat uses: the same question answers from it.
    again = await ai.ChatWhole(
        ai_pb2.ChatWholeRequest(
            request=ai_pb2.ChatRequest(message="What is a stock?", mode="fast")
        ),
        metadata=as_alice,
    )
    assert again.started.cached
    assert again.done.answer == result["answer"]
    # A job continuing her conversation answers in it.
    follow = await run(
        job,
        Attempt(alice, job_id="job-2"),
        {"message": "And a bond?", "mode": "fast", "conversation_id": result["conversation_id"]},
    )
    assert follow["conversation_id"] == result["conversation_id"]
    assert (await usage(ai, as_alice)).requests == 3


async def test_a_cancelled_job_stops_the_answer(
    platform: Platform, start_ai: Any, credentials: ServiceCredentials, clients: Any
) -> None:
    # A long answer (hundreds of tokens take seconds here) cancelled after the first check.
    app, _ = await start_ai(modes={"learn": {"max_tokens": 600, "latency_budget_s": 300}})
    job = ai_generate_job(clients(app.grpc.address), credentials)
    alice, _ = await platform.user()
    ctx = Attempt(alice, cancel_after=2)  # progress(0) and one check while ai answers
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        await run(
            job,
            ctx,
            {
                "message": "Explain in detail how a stock exchange works.",
                "mode": "learn",
                "no_cache": True,
            },
        )
    assert time.monotonic() - started < 5
    assert ctx.checkpoints == 3


async def test_failures_are_retried_or_not_as_ai_answers(
    platform: Platform, start_ai: Any, credentials: ServiceCredentials, clients: Any
) -> None:
    app, _ = await start_ai()
    job = ai_generate_job(clients(app.grpc.address), credentials)
    alice, _ = await platform.user()

    # ai refuses the request: a retry cannot fix it.
    with pytest.raises(JobFailed) as unknown_mode:
        await run(job, Attempt(alice), {"message": "Hi", "mode": "nosuchmode"})
    assert not unknown_mode.value.retryable
    with pytest.raises(JobFailed) as unknown_conversation:
        await run(job, Attempt(alice), {"message": "Hi", "conversation_id": "no-such-one"})
    assert not unknown_conversation.value.retryable
    # ai away: retried later.
    away = ai_generate_job(clients(NOWHERE), credentials)
    with pytest.raises(JobFailed) as unavailable:
        await run(away, Attempt(alice), {"message": "Hi"})
    assert unavailable.value.retryable
    assert unavailable.value.message.startswith("ai: ")
    # A job a service submitted as itself has no user to answer for.
    with pytest.raises(JobFailed) as not_a_user:
        await run(job, Attempt("service:ops"), {"message": "Hi"})
    assert (not_a_user.value.code, not_a_user.value.retryable) == ("not_a_user", False)


async def test_an_ai_that_does_not_list_the_worker_refuses_it(
    platform: Platform, start_ai: Any, credentials: ServiceCredentials, clients: Any
) -> None:
    app, ai = await start_ai(delegating_services=[])
    job = ai_generate_job(clients(app.grpc.address), credentials)
    alice, as_alice = await platform.user()
    with pytest.raises(JobFailed) as refused:
        await run(job, Attempt(alice), {"message": "Hi"})
    assert (refused.value.code, refused.value.retryable) == ("delegation_refused", False)
    assert (await usage(ai, as_alice)).requests == 0


async def test_every_slot_busy_is_retried(
    platform: Platform, start_ai: Any, credentials: ServiceCredentials, clients: Any
) -> None:
    # One model slot and a short queue wait; the test holds the slot (ai's own queue, as a long
    # answer would) while the job asks.
    app, ai = await start_ai(max_concurrency=1, queue_timeout_s=0.2)
    job = ai_generate_job(clients(app.grpc.address), credentials)
    alice, as_alice = await platform.user()
    async with app.slots.slot():
        with pytest.raises(JobFailed) as busy:
            await run(job, Attempt(alice), {"message": "Hi", "no_cache": True})
    assert (busy.value.code, busy.value.retryable) == ("ai_busy", True)
    # Once the slot is free the same job answers.
    result = await run(job, Attempt(alice, attempt=2), {"message": "Hi", "no_cache": True})
    assert result["answer"].strip()
    assert (await usage(ai, as_alice)).requests == 1  # the refused attempt recorded nothing


def test_params_are_the_chat_body_validated_as_the_gateway_does() -> None:
    params = ChatParams.model_validate(
        {"message": "  hi  ", "agents": ["fast", "learn"], "no_cache": True}
    )
    assert (params.message, params.agents, params.mode) == ("hi", ["fast", "learn"], None)
    bad = {
        "message": {"message": "   "},
        "agents": {"message": "hi", "agents": ["fast", "fast"]},
        "mode": {"message": "hi", "mode": "Not A Mode"},
        "conversation_id": {"message": "hi", "conversation_id": "a b"},
        "extra": {"message": "hi", "extra": 1},
    }
    for name, body in bad.items():
        with pytest.raises(ValidationError) as refused:
            ChatParams.model_validate(body)
        assert refused.value.errors()[0]["loc"][0] == name, name
    with pytest.raises(ValidationError):
        ChatParams.model_validate({"message": "x" * 8001})
    job = ai_generate_job(AiClient(NOWHERE, timeout_s=1, answer_timeout_s=120), None)  # type: ignore[arg-type]
    assert (job.name, job.user_may_submit, job.params) == ("ai.generate", True, ChatParams)
    assert job.timeout_s > 120  # ai's deadline ends the call before the job's
