"""The AI service's plain records: what the service takes and returns, and what the stores read
and write. No protobuf here; schemas.py converts between these and ai.v1 messages at the gRPC
edge. A module of its own so that the repository, the stores and the service all import it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


# -- usage -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Usage:
    """One answer's usage, as the engine measured it (ai.v1 Usage)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: int = 0
    first_token_ms: int = 0
    cached: bool = False
    model: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """One answered request, as the engine measured it (a request row and its event)."""

    request_id: str
    user_id: str
    conversation_id: str
    kind: str  # chat | analyze | search | job
    mode: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: int
    first_token_ms: int
    cached: bool


@dataclass(frozen=True, slots=True)
class UsageDay:
    day: str  # ISO date, UTC
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached_requests: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A user's usage per day per model, newest first, with the totals."""

    days: list[UsageDay]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class ModelPerformance:
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


@dataclass(frozen=True, slots=True)
class Performance:
    """Every replica's requests over a window; the live fields are this replica's (0 from the
    store, filled in by the service)."""

    requests: int = 0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    cache_hit_rate: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    models: list[ModelPerformance] = field(default_factory=list)
    queue_depth: int = 0
    in_flight: int = 0
    max_concurrency: int = 0
    cache_l1_entries: int = 0
    cache_l1_bytes: int = 0


# -- conversations -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConversationInfo:
    conversation_id: str
    title: str
    mode: str
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    role: str
    content: str
    mode: str
    model: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    conversation: ConversationInfo
    messages: list[ConversationMessage]


# -- requests ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChatQuery:
    """A ChatRequest as it came (service.chat_input validates it); jobs store it as it came."""

    message: str = ""
    mode: str = ""
    model: str = ""
    conversation_id: str = ""
    agents: tuple[str, ...] = ()
    no_cache: bool = False


@dataclass(frozen=True, slots=True)
class Bar:
    time: float | None  # epoch seconds; None when the request left it out
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class AnalyzeQuery:
    symbol: str
    bars: Sequence[Bar]
    question: str = ""
    model: str = ""
    no_cache: bool = False
    interval: str = ""  # without bars: charts' candles at this interval


@dataclass(frozen=True, slots=True)
class SearchQuery:
    query: str
    namespace: str = ""
    limit: int = 0
    no_summary: bool = False


# -- answers -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Started:
    request_id: str
    mode: str
    model: str
    cached: bool
    conversation_id: str = ""
    agents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    content: str
    agent: str = ""


@dataclass(frozen=True, slots=True)
class Source:
    n: int
    id: str
    namespace: str
    score: float
    text: str


@dataclass(frozen=True, slots=True)
class Sources:
    sources: Sequence[Source]


@dataclass(frozen=True, slots=True)
class AgentPart:
    agent: str
    model: str
    content: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Done:
    answer: str
    usage: Usage
    finish_reason: str
    parts: Sequence[AgentPart] = ()


# A streamed answer: Started, Chunk..., Sources (when RAG ran), Done.
AnswerEvent = Started | Chunk | Sources | Done


@dataclass(frozen=True, slots=True)
class SearchHit:
    id: str
    namespace: str
    score: float
    text: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[SearchHit]
    summary: str = ""
    usage: Usage | None = None  # None: no summary


# -- modes and jobs ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModeInfo:
    name: str
    description: str
    model: str
    rag: bool


@dataclass(frozen=True, slots=True)
class Modes:
    mode: str  # the caller's default
    modes: list[ModeInfo]


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    status: str  # queued | running | succeeded | failed
    created_at: datetime
    finished_at: datetime | None
    answer: str
    usage: Usage | None
    conversation_id: str
    error: str
