"""One LLM protocol: OpenAI-compatible chat completions (the `openai` SDK), streamed or not.
A stream's events are parsed here (`data:` lines of JSON chunks); the SDK sends the request.

Every configured model is a base URL + model id + key (config.py); one `AsyncOpenAI` client is
kept per (base URL, key). Locally that is llama.cpp's server (llama-cpp-python) serving
SmolLM2-135M; elsewhere vLLM, OpenAI or Groq, unchanged.

Token counts: streams ask for usage (`stream_options={"include_usage": True}`) and use it when
the endpoint reports it. llama-cpp-python's server reports none on streams, so then the service
counts: completion tokens = content chunks received (that server sends one token per chunk),
prompt tokens = an estimate (`estimate_prompt_tokens`: ~4 characters per token plus a few per
message for the chat template). Those generations count in aether_ai_usage_estimated_total.
Non-streaming calls (jobs) use the usage the endpoint returns.

Closing a stream (the caller went away) closes the upstream HTTP response, which is what makes
llama.cpp's server stop generating. A stream that breaks (connection dropped, an error event,
a line that is not a chunk) is Unavailable `llm_unavailable`, like an endpoint that is down.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

import httpx2  # the openai SDK's HTTP client: what a broken stream raises
import openai
import orjson
from openai import AsyncOpenAI, DefaultAioHttpClient

from aether_ai.config import ModelConfig
from aether_ai.metrics import MODEL_CALLS, USAGE_ESTIMATED
from aether_common.errors import AetherError, InternalError, Unavailable, ValidationFailed
from aether_common.logging import get_logger

log = get_logger(__name__)

CHARS_PER_TOKEN = 4
# Role markers and separators a chat template adds around each message.
TEMPLATE_TOKENS_PER_MESSAGE = 4
PING_TIMEOUT_S = 2.0


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer, as streamed."""

    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    """How a generation ended and what it used."""

    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    # True when the service counted the tokens itself (the endpoint reported no usage).
    estimated: bool
    # The stream ended without a finish reason (the server cut it): not worth caching.
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as an endpoint reported them."""

    prompt_tokens: int
    completion_tokens: int


class BrokenStream(Exception):
    """An event that is not a chat completion chunk."""


def _event_data(line: str) -> str | None:
    """The data of a server-sent event line; None for blank lines, comments and other fields
    (OpenAI-compatible servers send each chunk as one `data:` line)."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BrokenStream(f"not JSON: {data[:80]!r}") from exc
    if not isinstance(chunk, dict):
        raise BrokenStream(f"not a chunk: {data[:80]!r}")
    if chunk.get("error"):  # an endpoint that fails mid-stream says so in an event
        raise BrokenStream(f"the endpoint reported an error: {str(chunk['error'])[:200]}")
    return chunk


def _usage(reported: Any) -> Usage | None:
    if not isinstance(reported, dict):
        return None
    return Usage(
        int(reported.get("prompt_tokens") or 0), int(reported.get("completion_tokens") or 0)
    )


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m["content"]) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages) + 3


def _typed_error(model: str, exc: openai.OpenAIError) -> AetherError:
    """An SDK failure as the typed error the caller sees (details stay in the log)."""
    log.warning("model call failed", model=model, error=repr(exc))
    if isinstance(exc, openai.APIStatusError) and exc.status_code < 500:
        if exc.status_code == 429:
            return Unavailable(
                "the language model is rate limited; retry shortly",
                code="llm_unavailable",
                retry_after=5,
            )
        return InternalError("the language model refused the request")
    return Unavailable("the language model is unavailable; retry", code="llm_unavailable")


class LlmClient:
    """Component: the model endpoints. Readiness = every endpoint answers GET /models."""

    name = "llm"

    def __init__(self, models: Mapping[str, ModelConfig], *, default_base_url: str) -> None:
        self.models = dict(models)
        self.default_base_url = default_base_url
        self._clients: dict[tuple[str, str], AsyncOpenAI] = {}
        # Model calls made by this instance (tests prove cache hits with it).
        self.calls = 0

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise ValidationFailed(
                f"unknown model {name!r}; one of: {', '.join(sorted(self.models))}",
                field_errors={"model": "unknown model"},
            ) from None

    def _client(self, config: ModelConfig) -> AsyncOpenAI:
        base_url = config.base_url or self.default_base_url
        api_key = config.api_key.get_secret_value()
        key = (base_url, api_key)
        client = self._clients.get(key)
        if client is None:
            client = AsyncOpenAI(
                base_url=base_url,
                # The SDK insists on a key; local servers ignore it.
                api_key=api_key or "no-key",
                timeout=config.timeout_s,
                max_retries=0,  # the caller decides; a retried generation costs twice
                # aiohttp reads a stream for ~0.2 ms of CPU per token less than the default
                # transport (bench/ai.py); errors still come as httpx2's.
                http_client=DefaultAioHttpClient(),
            )
            self._clients[key] = client
        return client

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        for config in self.models.values():
            self._client(config)

    async def stop(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def ready(self) -> bool:
        endpoints = {(c.base_url or self.default_base_url): c for c in self.models.values()}
        results = await asyncio.gather(*(self._ping(c) for c in endpoints.values()))
        return all(results)

    async def _ping(self, config: ModelConfig) -> bool:
        try:
            await self._client(config).with_options(timeout=PING_TIMEOUT_S).models.list()
        except openai.OpenAIError as exc:
            log.warning("model endpoint not ready", model=config.model, error=repr(exc))
            return False
        return True

    # -- generation --------------------------------------------------------------------------
    async def stream(
        self,
        name: str,
        messages: Sequence[Message],
        *,
        temperature: float,
        max_tokens: int,
    ) -> AsyncGenerator[Delta | Finish, None]:
        """Deltas as they come, then one Finish. Closing the iterator closes the upstream."""
        config = self.model(name)
        self.calls += 1
        # The SDK makes the request (URL, key, status errors); the events are read here, one
        # orjson parse per line: the SDK's typed chunk objects cost ~0.4 ms of CPU per token,
        # taken from a model server that shares the machine (bench/ai.py).
        request = self._client(config).chat.completions.with_streaming_response.create(
            model=config.model,
            messages=cast(Any, list(messages)),  # TypedDicts of the SDK's shape
            temperature=temperature,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = 0
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            # Leaving the block, cancellation included, closes the response, which tells the
            # server to stop generating.
            async with request as response:
                async for line in response.iter_lines():
                    data = _event_data(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        break
                    chunk = _chunk(data)
                    usage = _usage(chunk.get("usage")) or usage
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            chunks += 1
                            yield Delta(content)
                        finish_reason = choice.get("finish_reason") or finish_reason
        except openai.OpenAIError as exc:
            MODEL_CALLS.labels(name, "error").inc()
            raise _typed_error(name, exc) from exc
        except (httpx2.HTTPError, httpx2.StreamError, BrokenStream) as exc:
            MODEL_CALLS.labels(name, "error").inc()  # the connection dropped, or nonsense came
            log.warning("model stream broke", model=name, error=repr(exc))
            raise Unavailable(
                "the language model stream broke; retry", code="llm_unavailable"
            ) from exc
        MODEL_CALLS.labels(name, "ok").inc()
        yield self._finish(name, messages, finish_reason, usage, chunks)

    async def complete(
        self,
        name: str,
        messages: Sequence[Message],
        *,
        temperature: float,
        max_tokens: int,
    ) -> tuple[str, Finish]:
        """One non-streamed answer and how it ended (usage as the endpoint reports it)."""
        config = self.model(name)
        self.calls += 1
        try:
            response = await self._client(config).chat.completions.create(
                model=config.model,
                messages=cast(Any, list(messages)),
                temperature=temperature,
                max_tokens=max_tokens,
            )
        except openai.OpenAIError as exc:
            MODEL_CALLS.labels(name, "error").inc()
            raise _typed_error(name, exc) from exc
        MODEL_CALLS.labels(name, "ok").inc()
        text = "".join(choice.message.content or "" for choice in response.choices)
        reason = response.choices[0].finish_reason if response.choices else None
        chunks = estimate_tokens(text) if text else 0
        reported = response.usage
        usage = Usage(reported.prompt_tokens, reported.completion_tokens) if reported else None
        return text, self._finish(name, messages, reason, usage, chunks)

    @staticmethod
    def _finish(
        name: str,
        messages: Sequence[Message],
        finish_reason: str | None,
        usage: Usage | None,
        chunks: int,
    ) -> Finish:
        reason = "length" if finish_reason in (None, "length") else "stop"
        interrupted = finish_reason is None
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return Finish(
                reason,
                usage.prompt_tokens,
                usage.completion_tokens,
                estimated=False,
                interrupted=interrupted,
            )
        USAGE_ESTIMATED.labels(name).inc()
        return Finish(
            reason,
            estimate_prompt_tokens(messages),
            chunks,
            estimated=True,
            interrupted=interrupted,
        )
