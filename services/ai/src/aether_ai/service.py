"""The AI service's rules: which mode and model answer, what goes in the prompt, the cache, the
queue, usage, conversations. grpc.py calls it with a verified caller; it raises typed errors.
It takes and returns plain records (records.py); grpc.py converts them (schemas.py).

A streamed answer (Chat, Analyze) is: Started, Chunk..., Sources (when RAG ran), Done. Usage is
recorded (UsageStore.record) and the conversation appended BEFORE Done is sent: Done is the
acknowledgement. A generation the caller abandons records no usage and appends nothing (the
stream is closed upstream and the slot freed; aether_ai_generations_cancelled_total counts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, replace
from datetime import datetime

from aether_ai import prompts, repository, schemas, validation
from aether_ai.agents import MULTI_AGENT, merge
from aether_ai.analysis import Summary, summarise
from aether_ai.answers import Answer, Answers, Outcome, Plan
from aether_ai.cache import ALL_MODES, cache_key, context_hash
from aether_ai.callers import Caller
from aether_ai.config import AUTO, MEMORIES, AiSettings, ModeConfig
from aether_ai.conversations import Conversation, Conversations, Turn
from aether_ai.export import UserExport
from aether_ai.jobs import JobResult, Jobs
from aether_ai.market import ChartsNotConfigured, MarketClient
from aether_ai.metrics import ROUTED
from aether_ai.preferences import Preferences
from aether_ai.rag import NO_RETRIEVAL, MemoryClient, Retrieval, Retriever, Snippet, footer, shorten
from aether_ai.records import (
    AnalyzeQuery,
    AnswerEvent,
    ChatQuery,
    Chunk,
    Completion,
    ConversationDetail,
    ConversationInfo,
    Done,
    Job,
    ModeInfo,
    Modes,
    Performance,
    SearchQuery,
    SearchResult,
    Source,
    Sources,
    Started,
    UsageReport,
)
from aether_ai.routing import route
from aether_ai.usage import UsageStore
from aether_common.errors import NotFound, ValidationFailed
from aether_common.postgres import Conn

DEFAULT_ANALYZE_QUESTION = "Give a short technical reading of this series."
SEARCH_MODE = "fast"
SEARCH_INSTRUCTION = (
    "Summarise what the sources say about the question in two sentences, citing them as [n]."
)
USAGE_DAYS_DEFAULT, USAGE_DAYS_MAX = 30, 366
WINDOW_DEFAULT, WINDOW_MAX = 60, 10_080
LIST_DEFAULT, LIST_MAX = 20, 100


@dataclass(frozen=True, slots=True)
class ChatInput:
    """A validated ChatRequest."""

    message: str
    mode: str  # "" (the caller's default), "auto" or a mode
    model: str  # "" = the mode's
    conversation_id: str
    agents: tuple[str, ...]
    no_cache: bool


def _sources(retrieval: Retrieval) -> Sources:
    return Sources([Source(s.n, s.id, s.namespace, s.score, s.text) for s in retrieval.snippets])


def _completion(
    request_id: str,
    user_id: str,
    conversation_id: str,
    kind: str,
    mode: str,
    outcome: Outcome,
) -> Completion:
    u = outcome.usage
    return Completion(
        request_id=request_id,
        user_id=user_id,
        conversation_id=conversation_id,
        kind=kind,
        mode=mode,
        model=u.model,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=u.cost_usd,
        latency_ms=u.latency_ms,
        first_token_ms=u.first_token_ms,
        cached=u.cached,
    )


class AiService:
    def __init__(
        self,
        settings: AiSettings,
        *,
        answers: Answers,
        retriever: Retriever,
        memory: MemoryClient,
        market: MarketClient | None = None,
        conversations: Conversations,
        preferences: Preferences,
        usage: UsageStore,
        jobs: Jobs,
        exports: UserExport,
    ) -> None:
        self.settings = settings
        self.answers = answers
        self._retriever = retriever
        self._memory = memory
        self._market = market
        self._conversations = conversations
        self._preferences = preferences
        self._usage = usage
        self._jobs = jobs
        self._exports = exports

    # == input ===================================================================================
    def chat_input(self, request: ChatQuery) -> ChatInput:
        s = self.settings
        message = validation.text(request.message, field="message", max_chars=s.max_prompt_chars)
        agents: tuple[str, ...] = ()
        mode = request.mode
        if request.agents:
            agents = tuple(validation.agents(request.agents, s.modes))
        elif mode:
            validation.mode(mode, s.modes)
        return ChatInput(
            message=message,
            mode=mode,
            model=validation.model(request.model, s.models),
            conversation_id=validation.conversation_id(request.conversation_id),
            agents=agents,
            no_cache=request.no_cache,
        )

    async def default_mode(self, user_id: str) -> str:
        chosen = await self._preferences.get_mode(user_id)
        if chosen is not None and (chosen == AUTO or chosen in self.settings.modes):
            return chosen
        return self.settings.default_mode

    async def resolve_mode(self, user_id: str, requested: str, message: str) -> str:
        mode = requested or await self.default_mode(user_id)
        if mode == AUTO:
            mode = route(message).mode
            ROUTED.labels(mode).inc()
        return mode

    # == planning ================================================================================
    async def _retrieve(self, query: str, modes: Sequence[ModeConfig]) -> Retrieval:
        namespaces = list(
            dict.fromkeys(ns for mode in modes if mode.rag for ns in mode.rag_namespaces)
        )
        if not namespaces:
            return NO_RETRIEVAL
        return await self._retriever.retrieve(query, namespaces)

    def _plan(
        self,
        mode_name: str,
        model: str,
        *,
        prompt: str,
        user_content: str,
        user_id: str,
        started: float,
        no_cache: bool,
        retrieval: Retrieval = NO_RETRIEVAL,
        history: Sequence[Turn] = (),
        extra_context: Sequence[str] = (),
        system_prompt: str | None = None,
    ) -> Plan:
        s = self.settings
        mode = s.modes[mode_name]
        config = self.answers.llm.model(model)
        system = system_prompt or mode.system_prompt
        # Search passes its own system prompt and always shows its hits.
        uses_sources = mode.rag or system_prompt is not None
        snippets = retrieval.snippets if uses_sources else ()
        messages = prompts.build(
            system,
            user_content,
            sources=snippets,
            history=history,
            budget_chars=s.prompt_budget_chars,
            turn_chars=s.history_turn_chars,
        )
        key = None
        if s.cache_enabled and not no_cache:
            # Personal context (history, "memories"): the answer is this user's alone.
            personal = bool(history) or (uses_sources and retrieval.personal)
            context = context_hash(
                [
                    *(f"{s_.namespace}/{s_.id}\n{s_.text}" for s_ in snippets),
                    *extra_context,
                    *(f"{turn.role}:{turn.content}" for turn in history),
                ]
            )
            key = cache_key(
                mode=mode_name,
                model_id=f"{s.base_url(config)}|{config.model}",
                settings=f"{system}|{mode.temperature}|{mode.max_tokens}",
                prompt=prompt,
                context=context,
                user_id=user_id if personal else None,
            )
        return Plan(
            mode=mode_name,
            model=model,
            messages=messages,
            temperature=mode.temperature,
            max_tokens=mode.max_tokens,
            budget_s=mode.latency_budget_s,
            cache_key=key,
            footer=footer(snippets),
            started=started,
        )

    # == Chat ====================================================================================
    async def chat(
        self, caller: Caller, request: ChatQuery, *, chunks: bool = True
    ) -> AsyncGenerator[AnswerEvent, None]:
        """The answer's events; `chunks=False` (a caller that reads only the whole answer) skips
        the Chunk events."""
        started = time.perf_counter()
        inp = self.chat_input(request)
        request_id = str(uuid.uuid4())
        user = caller.user_id
        if inp.agents:
            modes = list(inp.agents)
            conversation_mode = MULTI_AGENT
        else:
            modes = [await self.resolve_mode(user, inp.mode, inp.message)]
            conversation_mode = modes[0]
        conversation = await self._conversations.start_or_continue(
            user, inp.conversation_id, first_message=inp.message, mode=conversation_mode
        )
        retrieval = await self._retrieve(inp.message, [self.settings.modes[m] for m in modes])
        plans = [
            self._plan(
                mode,
                inp.model or self.settings.modes[mode].model,
                prompt=inp.message,
                user_content=inp.message,
                user_id=user,
                started=started,
                no_cache=inp.no_cache,
                retrieval=retrieval,
                history=conversation.history,
            )
            for mode in modes
        ]
        async with AsyncExitStack() as stack:
            # Every part's cache lookup, and a slot for each miss, before anything is sent.
            opened = [await stack.enter_async_context(self.answers.open(plan)) for plan in plans]
            yield Started(
                request_id=request_id,
                conversation_id=conversation.id,
                mode=conversation_mode,
                model=",".join(dict.fromkeys(plan.model for plan in plans)),
                agents=inp.agents,
                cached=all(answer.cached for answer in opened),
            )
            if inp.agents:
                async with aclosing(self._stream_agents(list(inp.agents), opened)) as events:
                    async for event in events:
                        if chunks:
                            yield event
            else:
                async with aclosing(opened[0].pieces()) as pieces:
                    async for piece in pieces:
                        if chunks:
                            yield Chunk(piece)
            outcomes = [answer.outcome for answer in opened]
        if retrieval.snippets and any(plan.footer for plan in plans):
            yield _sources(retrieval)
        done = await self._conclude(
            "chat", request_id, user, conversation, inp, conversation_mode, modes, outcomes
        )
        yield done

    async def _conclude(
        self,
        kind: str,
        request_id: str,
        user_id: str,
        conversation: Conversation,
        inp: ChatInput,
        conversation_mode: str,
        modes: Sequence[str],
        outcomes: Sequence[Outcome],
    ) -> Done:
        """Usage recorded (one row per agent, with its event) and both turns appended (a new
        conversation created with them), in one statement: then Done may go."""
        if inp.agents:
            usage = [
                (f"{request_id}/{agent}", agent, outcome)
                for agent, outcome in zip(inp.agents, outcomes, strict=True)
            ]
            merged = merge(inp.agents, outcomes)
            done = Done(merged.answer, merged.usage, merged.finish_reason, merged.parts)
        else:
            usage = [(request_id, modes[0], outcomes[0])]
            outcome = outcomes[0]
            done = Done(outcome.answer, outcome.usage, outcome.finish_reason)
        turns = [
            Turn("user", inp.message, conversation_mode, ""),
            Turn("assistant", done.answer, conversation_mode, done.usage.model),
        ]
        completions = [
            _completion(part_id, user_id, conversation.id, kind, mode, outcome)
            for part_id, mode, outcome in usage
        ]
        await self._conversations.append(
            user_id, conversation, turns, requests=self._usage.rows(completions)
        )
        return done

    async def _stream_agents(
        self, agents: list[str], opened: list[Answer]
    ) -> AsyncGenerator[Chunk, None]:
        """The agents' pieces as they come, tagged with the agent; every part runs at once."""
        queue: asyncio.Queue[tuple[str, str] | BaseException | None] = asyncio.Queue()

        async def pump(agent: str, answer: Answer) -> None:
            try:
                async with aclosing(answer.pieces()) as pieces:
                    async for piece in pieces:
                        queue.put_nowait((agent, piece))
            except Exception as exc:  # handed to the reader, which raises it
                queue.put_nowait(exc)
                return
            queue.put_nowait(None)

        tasks = [
            asyncio.create_task(pump(agent, answer))
            for agent, answer in zip(agents, opened, strict=True)
        ]
        try:
            running = len(tasks)
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield Chunk(item[1], item[0])
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # == Analyze =================================================================================
    async def analyze(
        self, caller: Caller, request: AnalyzeQuery, *, chunks: bool = True
    ) -> AsyncGenerator[AnswerEvent, None]:
        """As chat()."""
        started = time.perf_counter()
        s = self.settings
        symbol = validation.symbol(request.symbol)
        question = validation.optional_text(
            request.question, field="question", max_chars=s.max_question_chars
        )
        mode_name = "stock_analysis"
        mode = s.modes[mode_name]
        model = validation.model(request.model, s.models) or mode.model
        data = (await self._market_data(symbol, request)).as_text()
        asked = question or DEFAULT_ANALYZE_QUESTION
        retrieval = await self._retrieve(f"{symbol} {asked}", [mode])
        plan = self._plan(
            mode_name,
            model,
            prompt=f"{symbol}\n{asked}",
            user_content=f"Market data:\n{data}\n\nQuestion: {asked}",
            user_id=caller.user_id,
            started=started,
            no_cache=request.no_cache,
            retrieval=retrieval,
            extra_context=[data],
        )
        request_id = str(uuid.uuid4())
        async with self.answers.open(plan) as answer:
            yield Started(request_id=request_id, mode=mode_name, model=model, cached=answer.cached)
            async with aclosing(answer.pieces()) as pieces:
                async for piece in pieces:
                    if chunks:
                        yield Chunk(piece)
            outcome = answer.outcome
        if plan.footer:
            yield _sources(retrieval)
        await self._usage.record(
            _completion(request_id, caller.user_id, "", "analyze", mode_name, outcome)
        )
        yield Done(outcome.answer, outcome.usage, outcome.finish_reason)

    async def _market_data(self, symbol: str, request: AnalyzeQuery) -> Summary:
        """The summary of the bars sent, or of charts' recent candles with charts' indicators."""
        if request.bars:
            return summarise(symbol, validation.bars(request.bars))
        interval = validation.interval(request.interval or "1d")
        if self._market is None:
            raise ChartsNotConfigured()
        recent = await self._market.recent(symbol, interval, self.settings.analyze_candles)
        if len(recent.bars.close) < validation.MIN_BARS:
            raise NotFound(f"{symbol} has fewer than {validation.MIN_BARS} candles at {interval}")
        # charts' TA-Lib values (what its charts show) replace the summary's own numpy ones.
        return replace(
            summarise(symbol, recent.bars),
            sma20=recent.sma20,
            sma50=recent.sma50,
            rsi14=recent.rsi14,
        )

    # == Search ==================================================================================
    async def search(self, caller: Caller, request: SearchQuery) -> SearchResult:
        started = time.perf_counter()
        s = self.settings
        query = validation.text(request.query, field="query", max_chars=validation.MAX_SEARCH_QUERY)
        namespace = validation.namespace(request.namespace)
        limit = validation.bounded(
            request.limit,
            field="limit",
            default=validation.SEARCH_LIMIT_DEFAULT,
            low=1,
            high=validation.SEARCH_LIMIT_MAX,
        )
        # The memory client answers in memory.v1 messages: read into records here.
        found = await self._memory.search(namespace, query, limit=limit)
        hits = [schemas.memory_hit(hit, namespace) for hit in found]
        if request.no_summary or not hits:
            return SearchResult(hits)
        snippets = tuple(
            Snippet(
                n,
                hit.id,
                namespace,
                round(float(hit.score), 4),
                shorten(hit.text, s.rag_snippet_chars),
            )
            for n, hit in enumerate(hits, start=1)
        )
        mode = s.modes[SEARCH_MODE]
        plan = self._plan(
            SEARCH_MODE,
            mode.model,
            prompt=query,
            user_content=query,
            user_id=caller.user_id,
            started=started,
            no_cache=False,
            retrieval=Retrieval(snippets, personal=namespace == MEMORIES),
            system_prompt=f"{mode.system_prompt} {SEARCH_INSTRUCTION}",
        )
        async with self.answers.open(plan) as answer:
            async with aclosing(answer.pieces()) as pieces:
                async for _ in pieces:
                    pass
            outcome = answer.outcome
        await self._usage.record(
            _completion(str(uuid.uuid4()), caller.user_id, "", "search", SEARCH_MODE, outcome)
        )
        return SearchResult(hits, summary=outcome.answer, usage=outcome.usage)

    # == jobs ====================================================================================
    async def submit_job(self, caller: Caller, request: ChatQuery | None) -> Job:
        """`request` None: the SubmitJobRequest had none."""
        if request is None:
            raise ValidationFailed("request is required", field_errors={"request": "required"})
        self.chat_input(request)  # refused now, not when a worker runs it
        return await self._jobs.submit(caller.user_id, request)

    async def get_job(self, caller: Caller, job_id: str) -> Job:
        return await self._jobs.get(caller.user_id, job_id)

    async def run_job(self, user_id: str, request: ChatQuery) -> JobResult:
        """JobRunner's run function: the stored request answered without streaming. RAG is
        skipped: the caller's token (which memory requires) is not kept at rest."""
        started = time.perf_counter()
        inp = self.chat_input(request)
        if inp.agents:
            modes, conversation_mode = list(inp.agents), MULTI_AGENT
        else:
            modes = [await self.resolve_mode(user_id, inp.mode, inp.message)]
            conversation_mode = modes[0]
        conversation = await self._conversations.start_or_continue(
            user_id, inp.conversation_id, first_message=inp.message, mode=conversation_mode
        )
        plans = [
            self._plan(
                mode,
                inp.model or self.settings.modes[mode].model,
                prompt=inp.message,
                user_content=inp.message,
                user_id=user_id,
                started=started,
                no_cache=inp.no_cache,
                history=conversation.history,
            )
            for mode in modes
        ]
        outcomes = await asyncio.gather(*(self._answer_text(plan) for plan in plans))
        done = await self._conclude(
            "job",
            str(uuid.uuid4()),
            user_id,
            conversation,
            inp,
            conversation_mode,
            modes,
            outcomes,
        )
        return JobResult(answer=done.answer, usage=done.usage, conversation_id=conversation.id)

    async def _answer_text(self, plan: Plan) -> Outcome:
        async with self.answers.open(plan) as answer:
            return await answer.text()

    # == modes, conversations, usage, admin ======================================================
    async def get_mode(self, caller: Caller) -> Modes:
        modes = [
            ModeInfo(
                name=AUTO,
                description="Routed by difficulty: simple questions to fast (small model), "
                "hard ones to deep_thinking (large model).",
                model="",
                rag=False,
            )
        ]
        modes += [
            ModeInfo(name=name, description=mode.description, model=mode.model, rag=mode.rag)
            for name, mode in self.settings.modes.items()
        ]
        return Modes(mode=await self.default_mode(caller.user_id), modes=modes)

    async def set_mode(self, caller: Caller, mode: str) -> str:
        """The mode now the caller's default."""
        chosen = validation.mode(mode, self.settings.modes)
        await self._preferences.set_mode(caller.user_id, chosen)
        return chosen

    async def list_conversations(
        self, caller: Caller, limit: int, before: datetime | None
    ) -> list[ConversationInfo]:
        """`limit` 0: the default; `before` (a naive datetime is UTC) pages on."""
        limit = validation.bounded(limit, field="limit", default=LIST_DEFAULT, low=1, high=LIST_MAX)
        return await self._conversations.list(caller.user_id, limit, before)

    async def get_conversation(self, caller: Caller, conversation_id: str) -> ConversationDetail:
        return await self._conversations.get(caller.user_id, conversation_id)

    async def delete_conversation(self, caller: Caller, conversation_id: str) -> None:
        await self._conversations.delete(caller.user_id, conversation_id)

    async def usage(self, caller: Caller, days: int) -> UsageReport:
        days = validation.bounded(
            days, field="days", default=USAGE_DAYS_DEFAULT, low=1, high=USAGE_DAYS_MAX
        )
        return await self._usage.usage(caller.user_id, days)

    async def performance(self, window_minutes: int) -> Performance:
        window = validation.bounded(
            window_minutes, field="window_minutes", default=WINDOW_DEFAULT, low=1, high=WINDOW_MAX
        )
        stored = await self._usage.performance(window)
        slots, l1 = self.answers.slots, self.answers.cache.l1
        return replace(
            stored,
            queue_depth=slots.waiting,
            in_flight=slots.in_flight,
            max_concurrency=slots.max_concurrency,
            cache_l1_entries=len(l1),
            cache_l1_bytes=l1.bytes,
        )

    # == accounts ================================================================================
    async def export_my_data(self, caller: Caller) -> str:
        """The caller's GDPR export (export.py), as JSON; a delegate (the worker running a
        `gdpr.export` job) gets the user's, as the user would."""
        document = await self._exports.document(caller.user_id)
        return document.model_dump_json(indent=2)

    async def erase_user(self, conn: Conn, user_id: str) -> dict[str, int]:
        """A deleted account's data, erased on `conn` (the consumer's transaction):
        conversations with their messages, jobs, preferences and request rows; rows per table.
        The daily usage aggregates stay (counts and cost only, kept for billing)."""
        return await repository.erase_user(conn, user_id)

    async def invalidate_cache(self, mode: str) -> int:
        target = validation.mode(mode, self.settings.modes, allow_auto=False) if mode else ALL_MODES
        return await self.answers.cache.invalidate(target)
