"""One answer from one mode: the cache first, else a model slot and the model's stream.

    async with answers.open(plan) as answer:     # cache lookup; on a miss, waits for a slot
        answer.cached                            # known before anything is sent
        async with aclosing(answer.pieces()) as pieces:
            async for text in pieces: ...        # streamed (or the cached answer in pieces)
        answer.outcome                           # the whole answer, usage, finish reason

The slot is held for the block and freed on exit, also when the caller goes away mid-stream: the
stream is closed (which stops the upstream generation) and aether_ai_generations_cancelled_total
counts it. The mode's latency budget bounds the generation: past it the answer ends where it
is, with finish_reason "length" (and is not cached). The service-made footer (RAG sources) is
the last piece of every fresh answer and part of what is cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

from aether_ai.cache import CachedAnswer, ResponseCache
from aether_ai.llm import Delta, Finish, LlmClient, Message, estimate_prompt_tokens
from aether_ai.metrics import (
    BUDGET_EXCEEDED,
    FIRST_TOKEN_SECONDS,
    GENERATION_SECONDS,
    GENERATIONS_CANCELLED,
    TOKENS_IN,
    TOKENS_OUT,
)
from aether_ai.queue import ModelSlots
from aether_ai.records import Usage

# Cached answers are replayed in pieces of about this many characters: a few large pieces, not
# one per token, because each streamed message costs ~0.15 ms of CPU on each side of gRPC, which
# for a 1 KB answer in 24-character pieces was most of a cache hit's time (bench/ai.py).
REPLAY_PIECE_CHARS = 256
CACHED = "cached"


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one generation needs; built by the service."""

    mode: str
    model: str  # a configured model name
    messages: list[Message]
    temperature: float
    max_tokens: int
    budget_s: float
    # None: no_cache, or nothing worth caching.
    cache_key: str | None
    # Appended by the service after the model's text (RAG sources).
    footer: str = ""
    # perf_counter() when the request arrived: latencies count from there.
    started: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    answer: str
    finish_reason: str  # stop | length | cached
    usage: Usage

    @property
    def cached(self) -> bool:
        return self.usage.cached


def replay_pieces(text: str, size: int = REPLAY_PIECE_CHARS) -> list[str]:
    """`text` cut after whitespace into pieces of about `size` characters (joined: `text`)."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        space = text.find(" ", end)
        end = len(text) if space == -1 or space - start > 2 * size else space + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class Answer:
    """One answer in progress (see the module docstring)."""

    def __init__(self, answers: Answers, plan: Plan, hit: CachedAnswer | None) -> None:
        self._answers = answers
        self.plan = plan
        self._hit = hit
        self._outcome: Outcome | None = None

    @property
    def cached(self) -> bool:
        return self._hit is not None

    @property
    def outcome(self) -> Outcome:
        if self._outcome is None:
            raise RuntimeError("the answer is not complete")
        return self._outcome

    async def pieces(self) -> AsyncGenerator[str, None]:
        # Inner generators are closed explicitly when the reader stops early: the generation's
        # stream (and so the upstream call) must close now, not when collected.
        if self._hit is not None:
            async with aclosing(self._replay(self._hit)) as replayed:
                async for piece in replayed:
                    yield piece
            return
        try:
            async with aclosing(self._generate()) as generated:
                async for piece in generated:
                    yield piece
        except (asyncio.CancelledError, GeneratorExit):
            if self._outcome is None:
                GENERATIONS_CANCELLED.inc()
            raise

    async def text(self) -> Outcome:
        """The whole answer, not streamed (jobs). Usage as the endpoint reports it."""
        if self._hit is not None:
            async with aclosing(self._replay(self._hit)) as pieces:
                async for _ in pieces:
                    pass
            return self.outcome
        plan = self.plan
        text, finish = await self._answers.llm.complete(
            plan.model, plan.messages, temperature=plan.temperature, max_tokens=plan.max_tokens
        )
        now = time.perf_counter()
        await self._finish(text, finish, first_token_at=now, now=now, cacheable=True)
        return self.outcome

    async def _replay(self, hit: CachedAnswer) -> AsyncGenerator[str, None]:
        first: float | None = None
        for piece in replay_pieces(hit.answer):
            first = first or time.perf_counter()
            yield piece
        now = time.perf_counter()
        usage = Usage(
            prompt_tokens=0,  # no model call: no tokens used, nothing to pay
            completion_tokens=0,
            total_tokens=0,
            cost_usd=0.0,
            latency_ms=_ms(now - self.plan.started),
            first_token_ms=_ms((first or now) - self.plan.started),
            cached=True,
            model=self.plan.model,
        )
        self._outcome = Outcome(hit.answer, CACHED, usage)

    async def _generate(self) -> AsyncGenerator[str, None]:
        plan = self.plan
        # The budget is the generation's own: time spent queued for a slot does not eat it.
        deadline = time.perf_counter() + plan.budget_s
        parts: list[str] = []
        first_token_at: float | None = None
        finish: Finish | None = None
        over_budget = False
        # Deltas that arrive within `coalesce_s` of the last piece sent go out together: each
        # piece costs a gRPC message, a gateway frame and a client read, CPU taken from a model
        # server that shares the machine (bench/ai.py). The first delta goes at once.
        coalesce_s = self._answers.coalesce_s
        pending: list[str] = []
        sent_at = 0.0
        stream = self._answers.llm.stream(
            plan.model, plan.messages, temperature=plan.temperature, max_tokens=plan.max_tokens
        )
        async with aclosing(stream):
            while True:
                left = deadline - time.perf_counter()
                try:
                    # Not asyncio.wait_for: on 3.11 it can swallow a cancel that comes as the
                    # delta does, and the generation would then run on with its slot held.
                    async with asyncio.timeout(max(0.0, left)):
                        event = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    over_budget = True
                    break
                if isinstance(event, Delta):
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                        FIRST_TOKEN_SECONDS.labels(plan.model).observe(
                            first_token_at - plan.started
                        )
                    parts.append(event.text)
                    pending.append(event.text)
                    now = time.perf_counter()
                    if now - sent_at >= coalesce_s:
                        sent_at = now
                        yield "".join(pending)
                        pending.clear()
                else:
                    finish = event
        if pending:
            yield "".join(pending)
        if plan.footer:
            yield plan.footer
        if over_budget:
            BUDGET_EXCEEDED.labels(plan.mode).inc()
        if over_budget or finish is None:
            finish = Finish(
                "length", estimate_prompt_tokens(plan.messages), len(parts), estimated=True
            )
        now = time.perf_counter()
        await self._finish(
            "".join(parts),
            finish,
            first_token_at=first_token_at or now,
            now=now,
            cacheable=not over_budget and not finish.interrupted,
        )

    async def _finish(
        self, text: str, finish: Finish, *, first_token_at: float, now: float, cacheable: bool
    ) -> None:
        plan = self.plan
        answer = text + plan.footer
        model = self._answers.llm.model(plan.model)
        usage = Usage(
            prompt_tokens=finish.prompt_tokens,
            completion_tokens=finish.completion_tokens,
            total_tokens=finish.prompt_tokens + finish.completion_tokens,
            cost_usd=model.cost(finish.prompt_tokens, finish.completion_tokens),
            latency_ms=_ms(now - plan.started),
            first_token_ms=_ms(first_token_at - plan.started),
            cached=False,
            model=plan.model,
        )
        GENERATION_SECONDS.labels(plan.model).observe(now - plan.started)
        TOKENS_IN.labels(plan.model).inc(finish.prompt_tokens)
        TOKENS_OUT.labels(plan.model).inc(finish.completion_tokens)
        self._outcome = Outcome(answer, finish.finish_reason, usage)
        if plan.cache_key is not None and cacheable and text.strip():
            await self._answers.cache.put(
                plan.cache_key,
                CachedAnswer(answer, plan.model, finish.prompt_tokens, finish.completion_tokens),
            )


class Answers:
    def __init__(
        self, llm: LlmClient, cache: ResponseCache, slots: ModelSlots, *, coalesce_s: float = 0.0
    ) -> None:
        self.llm = llm
        self.cache = cache
        self.slots = slots
        self.coalesce_s = coalesce_s

    @asynccontextmanager
    async def open(self, plan: Plan) -> AsyncIterator[Answer]:
        hit = await self.cache.get(plan.cache_key) if plan.cache_key is not None else None
        if hit is not None:
            yield Answer(self, plan, hit)
            return
        async with self.slots.slot():
            yield Answer(self, plan, None)
