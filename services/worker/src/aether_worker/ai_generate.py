"""`ai.generate`: an answer from the ai service, asked for later than the request that submitted
it (`POST /generate?async=true`, `POST /api/ai/generate?async=true`; docs/jobs-api.md).

- **params**: the `POST /api/ai/chat` body, validated as the gateway's `ChatIn` validates it
  (`message` trimmed, 1-8,000 characters; `mode`, `model`, `conversation_id`, `agents` 2-4
  distinct modes, `no_cache`). Unknown fields are refused.
- **run**: ai's ChatWhole, the call `POST /api/ai/chat` makes, with the worker's own service
  token acting for the job's owner (aether_common.delegation; ai lists the worker in
  AI_DELEGATING_SERVICES). The user's token is never stored: it may have expired by now. So the
  usage, the conversation and the cache are the owner's, as for a synchronous chat.
- **result**: exactly the JSON `POST /api/ai/chat` answers (the gateway's `AnswerOut`), so
  `result.answer` is the text.
- **failures**: ai away, busy (`ai_busy`: every model slot taken) or over a limit
  (RESOURCE_EXHAUSTED), a deadline, auth away: retried with backoff. A request ai refuses
  (INVALID_ARGUMENT, an unknown conversation...) fails the job at once: a retry cannot fix it.
- **cancel**: checked every half second while ai answers; a cancelled job cancels the call, so
  ai frees the model slot at once.

A retried attempt asks again: if an earlier attempt's answer was recorded by ai before the
worker lost it, the conversation holds both turns (ChatWhole has no idempotency key).
"""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from aether.ai.v1 import ai_pb2
from aether_common.errors import AetherError, RateLimited, Timeout, Unauthenticated, Unavailable
from aether_common.identity import SERVICE_SUBJECT_PREFIX
from aether_common.service_tokens import ServiceCredentials
from aether_worker.ai_client import AiClient
from aether_worker.handler import JobContext, JobFailed, JobType

NAME = "ai.generate"
# The gateway's limits (aether_gateway.ai.schemas), so a job accepted here is one ai accepts.
MODE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
MODEL_PATTERN = r"^[\w.:/@-]+$"
ID_PATTERN = r"^[\w.:-]{1,128}$"
MAX_PROMPT_CHARS = 8_000
# How often a running answer looks for a cancellation (JobContext.checkpoint).
CHECK_EVERY_S = 0.5
# The job's own limit is the answer's deadline plus this: ai's deadline ends the call first.
TIMEOUT_MARGIN_S = 30.0

Mode = Annotated[str, StringConstraints(pattern=MODE_PATTERN)]
Model = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=MODEL_PATTERN)]


class ChatParams(BaseModel):
    """The `POST /api/ai/chat` body (the gateway's ChatIn)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    message: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)
    ]
    mode: Mode | None = None
    model: Model | None = None
    conversation_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = None
    agents: Annotated[list[Mode], Field(min_length=2, max_length=4)] | None = None
    no_cache: bool = False

    @field_validator("agents")
    @classmethod
    def _distinct_agents(cls, agents: list[str] | None) -> list[str] | None:
        if agents is not None and len(set(agents)) != len(agents):
            raise ValueError("agents must be distinct modes")
        return agents


def chat_request(params: ChatParams) -> ai_pb2.ChatRequest:
    return ai_pb2.ChatRequest(
        message=params.message,
        mode=params.mode or "",
        model=params.model or "",
        conversation_id=params.conversation_id or "",
        agents=params.agents or [],
        no_cache=params.no_cache,
    )


# -- the answer as `POST /api/ai/chat` gives it (aether_gateway.ai.convert.whole) ----------------
def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _usage(message: Any) -> dict[str, Any] | None:
    if not message.HasField("usage"):
        return None
    u = message.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "cost_usd": _finite(u.cost_usd),
        "latency_ms": u.latency_ms,
        "first_token_ms": u.first_token_ms,
        "cached": u.cached,
        "model": u.model,
    }


def answer_json(answer: ai_pb2.ChatWholeResponse) -> dict[str, Any]:
    """The JSON body `POST /api/ai/chat` answers for the same ChatWhole response."""
    started, done = answer.started, answer.done
    return {
        "answer": done.answer,
        "conversation_id": started.conversation_id,
        "request_id": started.request_id,
        "mode": started.mode,
        "model": started.model,
        "agents": list(started.agents),
        "cached": started.cached,
        "sources": [
            {
                "n": s.n,
                "id": s.id,
                "namespace": s.namespace,
                # float32 on the wire: rounded as the gateway does.
                "score": round(_finite(s.score), 6),
                "text": s.text,
            }
            for s in answer.sources
        ],
        "parts": [
            {"agent": p.agent, "model": p.model, "content": p.content, "usage": _usage(p)}
            for p in done.parts
        ],
        "usage": _usage(done),
        "finish_reason": done.finish_reason,
    }


# -- the job -------------------------------------------------------------------------------------
class AiGenerate:
    """The handler: one whole answer from ai for the job's owner."""

    def __init__(self, ai: AiClient, credentials: ServiceCredentials) -> None:
        self._ai = ai
        self._credentials = credentials

    async def run(self, ctx: JobContext, params: ChatParams) -> dict[str, Any]:
        if ctx.owner_id.startswith(SERVICE_SUBJECT_PREFIX):  # a service submitted as itself
            raise JobFailed(
                "not_a_user",
                f"ai.generate answers for a user; this job's owner is {ctx.owner_id}",
                retryable=False,
            )
        await ctx.progress(0, "asking ai")
        try:
            token = await self._credentials.token()
            answer = await self._answer(ctx, params, token)
        except AetherError as exc:
            raise self._failed(exc) from exc
        if not answer.HasField("done"):
            raise JobFailed("bad_answer", "ai answered without finishing the answer")
        return answer_json(answer)

    async def _answer(
        self, ctx: JobContext, params: ChatParams, token: str
    ) -> ai_pb2.ChatWholeResponse:
        """ChatWhole, with a cancellation checkpoint every CHECK_EVERY_S while ai answers."""
        call = asyncio.ensure_future(
            self._ai.chat_whole(
                chat_request(params),
                user_id=ctx.owner_id,
                service=self._credentials.client_id,
                token=token,
            )
        )
        try:
            while not call.done():
                await asyncio.wait({call}, timeout=CHECK_EVERY_S)
                if not call.done():
                    await ctx.checkpoint()
            return call.result()
        finally:
            if not call.done():  # cancelled (or the attempt stopped): ai frees its slot
                call.cancel()
                with suppress(asyncio.CancelledError, AetherError):
                    await call

    def _failed(self, exc: AetherError) -> JobFailed:
        message = f"ai: {exc.detail}"
        if isinstance(exc, Unauthenticated):
            # ai refused the worker's token (keys rotated, revoked): fetch a fresh one next time.
            self._credentials.invalidate()
            return JobFailed(exc.error_code, message)
        retryable = isinstance(exc, Unavailable | RateLimited | Timeout) or exc.http_status >= 500
        return JobFailed(exc.error_code, message, retryable=retryable)


def ai_generate_job(
    ai: AiClient, credentials: ServiceCredentials, *, concurrency: int = 4
) -> JobType:
    """The `ai.generate` job type: users submit it; `concurrency` answers at once per worker
    process (ai's own queue bounds the model slots; more waiting here only holds leases)."""
    handler = AiGenerate(ai, credentials)
    return JobType(
        name=NAME,
        params=ChatParams,
        run=handler.run,
        user_may_submit=True,
        max_attempts=3,
        concurrency=concurrency,
        timeout_s=ai.answer_timeout_s + TIMEOUT_MARGIN_S,
    )
