"""Wire models (pydantic) of `/api/ai/*`: strict requests whose bounds mirror
protos/aether/ai/v1/ai.proto (so bad input is a 400 before any gRPC call), answers in the shapes
of docs/ai.md."""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from aether_gateway.schemas import Request, Response

# Mode and model names are the service's to know; the gateway only keeps them sane.
MODE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
ID_PATTERN = r"^[\w.:-]{1,128}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SYMBOL_PATTERN = r"^[A-Z0-9.^=-]{1,16}$"
MAX_PROMPT_CHARS = 8_000
MAX_QUESTION_CHARS = 2_000
MAX_QUERY_CHARS = 2_000
MIN_BARS, MAX_BARS = 2, 5_000


def _rfc3339_text(value: object) -> object:
    # A JSON number would otherwise pass as a Unix time: the API speaks RFC 3339 only.
    if not isinstance(value, str | datetime):
        raise ValueError("expected an RFC 3339 date-time string, e.g. 2025-01-02T15:04:05Z")
    return value


Rfc3339 = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339_text)]
Mode = Annotated[str, StringConstraints(pattern=MODE_PATTERN)]
Model = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.:/@-]+$")]
ConversationId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Prompt = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)
]
Query = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS)
]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


# -- requests ------------------------------------------------------------------------------------
class ChatIn(Request):
    """POST /api/ai/chat, /api/ai/chat/stream and /api/ai/generate (and the WS `chat` frame)."""

    message: Prompt
    mode: Mode | None = None
    model: Model | None = None
    conversation_id: ConversationId | None = None
    agents: Annotated[list[Mode], Field(min_length=2, max_length=4)] | None = None
    no_cache: bool = False

    @field_validator("agents")
    @classmethod
    def _distinct_agents(cls, agents: list[str] | None) -> list[str] | None:
        if agents is not None and len(set(agents)) != len(agents):
            raise ValueError("agents must be distinct modes")
        return agents


class BarIn(Request):
    time: Rfc3339
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Price

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.high < max(self.open, self.close) or self.low > min(self.open, self.close):
            raise ValueError("high must be >= open and close, low <= open and close")
        return self


class AnalyzeIn(Request):
    symbol: Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True)]
    # None: the symbol's recent candles at `interval` from the charts service.
    bars: Annotated[list[BarIn], Field(min_length=MIN_BARS, max_length=MAX_BARS)] | None = None
    interval: Literal["1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"] | None = None
    question: Annotated[str, StringConstraints(max_length=MAX_QUESTION_CHARS)] = ""
    model: Model | None = None
    no_cache: bool = False

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, symbol: str) -> str:
        # After upper-casing (a pattern constraint would see the text before it).
        if not re.fullmatch(SYMBOL_PATTERN, symbol):
            raise ValueError("a symbol is 1-16 characters of A-Z 0-9 . ^ = - (any case)")
        return symbol

    @field_validator("bars")
    @classmethod
    def _in_time_order(cls, bars: list[BarIn] | None) -> list[BarIn] | None:
        for i, (before, bar) in enumerate(itertools.pairwise(bars or []), start=1):
            if bar.time <= before.time:
                raise ValueError(f"bars must be in strictly increasing time order (bar {i})")
        return bars


class SearchIn(Request):
    query: Query
    namespace: Literal["knowledge", "memories"] = "knowledge"
    limit: Annotated[int, Field(ge=1, le=20)] = 5
    no_summary: bool = False


class ModeIn(Request):
    mode: Mode


class InvalidateCacheIn(Request):
    mode: Mode | None = None


# -- responses -----------------------------------------------------------------------------------
class UsageOut(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    latency_ms: int = Field(description="request start to last token, at the service")
    first_token_ms: int
    cached: bool
    model: str


class SourceOut(Response):
    n: int = Field(description="cited in the answer as [n]")
    id: str
    namespace: str
    score: float
    text: str


class PartOut(Response):
    agent: str
    model: str
    content: str
    usage: UsageOut | None


class AnswerOut(Response):
    """A whole answer (POST /api/ai/chat, /analyze, /generate)."""

    answer: str
    conversation_id: str
    request_id: str
    mode: str
    model: str
    agents: list[str]
    cached: bool
    sources: list[SourceOut]
    parts: list[PartOut] = Field(description="multi-agent only: each agent's own answer")
    usage: UsageOut | None
    finish_reason: str = Field(description="stop, length or cached")


class SearchHitOut(Response):
    id: str
    namespace: str
    score: float
    text: str
    metadata: dict[str, Any]


class SearchOut(Response):
    hits: list[SearchHitOut]
    summary: str = Field(description='cites hits as [n]; "" with no_summary or no hits')
    usage: UsageOut | None


class ModeInfoOut(Response):
    name: str
    description: str
    model: str
    rag: bool


class ModesOut(Response):
    mode: str = Field(description="the caller's default mode")
    modes: list[ModeInfoOut]


class ModeOut(Response):
    mode: str


JobStatus = Literal["queued", "running", "succeeded", "failed", "unknown"]


class JobQueuedOut(Response):
    job_id: str
    status: JobStatus


class JobOut(Response):
    job_id: str
    status: JobStatus
    created_at: str | None
    finished_at: str | None
    answer: str | None = Field(description="when succeeded")
    usage: UsageOut | None
    conversation_id: str | None
    error: str | None = Field(description="when failed: a message for the user")


class ConversationOut(Response):
    conversation_id: str
    title: str
    mode: str
    created_at: str | None
    updated_at: str | None
    message_count: int


class ConversationsOut(Response):
    conversations: list[ConversationOut] = Field(description="most recently updated first")
    next_before: str | None = Field(
        description="pass as `before` for the next page; null on the last page"
    )


class ConversationMessageOut(Response):
    role: str
    content: str
    mode: str
    model: str
    created_at: str | None


class ConversationDetailOut(Response):
    conversation: ConversationOut
    messages: list[ConversationMessageOut]


class UsageDayOut(Response):
    day: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached_requests: int


class UsageReportOut(Response):
    days: list[UsageDayOut]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    requests: int


class ModelPerformanceOut(Response):
    model: str
    requests: int
    latency_p50_ms: float
    latency_p95_ms: float
    first_token_p50_ms: float
    first_token_p95_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hit_rate: float


class PerformanceOut(Response):
    requests: int
    latency_p50_ms: float
    latency_p95_ms: float
    cache_hit_rate: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    models: list[ModelPerformanceOut]
    queue_depth: int = Field(description="the answering replica's live figure")
    in_flight: int
    max_concurrency: int
    cache_l1_entries: int
    cache_l1_bytes: int


class CacheInvalidatedOut(Response):
    removed: int = Field(description="shared (L2) entries removed")
