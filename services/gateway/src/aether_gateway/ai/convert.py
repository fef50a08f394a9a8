"""ai's protobuf messages <-> the JSON objects clients see (REST bodies, SSE events, WS frames)."""

from __future__ import annotations

import functools
import math
from datetime import date, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether_gateway.ai.schemas import AnalyzeIn, ChatIn
from aether_gateway.convert import enum_name

# A streamed answer's event as the gateway passes it on: (kind, JSON object).
Event = tuple[str, dict[str, Any]]
StreamEvent = ai_pb2.ChatResponse | ai_pb2.AnalyzeResponse


def timestamp(message: Any, field: str) -> str | None:
    """RFC 3339 UTC with microseconds (exact, so a `before` cursor taken from an answer never
    skips a row), None when unset."""
    if not message.HasField(field):
        return None
    return rfc3339(getattr(message, field))


def rfc3339(value: Timestamp) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ`, the text of `f"{value.ToDatetime():...%f}Z"`, made from the
    seconds with integer arithmetic and a cache of day strings: a page of 10,000 candles formats
    10,000 of these, and ToDatetime + strftime was most of the gateway's CPU for it
    (bench/charts.py, 2.5x slower)."""
    days, second = divmod(value.seconds, 86_400)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{_day(days)}T{hour:02d}:{minute:02d}:{second:02d}.{value.nanos // 1000:06d}Z"


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=8192)
def _day(days_since_epoch: int) -> str:
    return date.fromordinal(_EPOCH_ORDINAL + days_since_epoch).isoformat()


def to_timestamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def finite(value: float) -> float:
    """JSON has no NaN or infinity: an odd figure from a peer becomes 0, not a broken body."""
    return value if math.isfinite(value) else 0.0


def score(value: float) -> float:
    # float32 on the wire: 0.8 arrives as 0.800000011920929.
    return round(finite(value), 6)


def struct(value: Struct) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(value)
    return result


# -- requests ------------------------------------------------------------------------------------
def chat_request(body: ChatIn) -> ai_pb2.ChatRequest:
    return ai_pb2.ChatRequest(
        message=body.message,
        mode=body.mode or "",
        model=body.model or "",
        conversation_id=body.conversation_id or "",
        agents=body.agents or [],
        no_cache=body.no_cache,
    )


def analyze_request(body: AnalyzeIn) -> ai_pb2.AnalyzeRequest:
    return ai_pb2.AnalyzeRequest(
        symbol=body.symbol,
        bars=[
            ai_pb2.Bar(
                time=to_timestamp(bar.time),
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                volume=bar.volume,
            )
            for bar in body.bars or ()
        ],
        interval=body.interval or "",
        question=body.question,
        model=body.model or "",
        no_cache=body.no_cache,
    )


# -- streamed answers ----------------------------------------------------------------------------
def usage(u: ai_pb2.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "cost_usd": finite(u.cost_usd),
        "latency_ms": u.latency_ms,
        "first_token_ms": u.first_token_ms,
        "cached": u.cached,
        "model": u.model,
    }


def optional_usage(message: Any) -> dict[str, Any] | None:
    return usage(message.usage) if message.HasField("usage") else None


def started(s: ai_pb2.Started) -> dict[str, Any]:
    return {
        "request_id": s.request_id,
        "conversation_id": s.conversation_id,
        "mode": s.mode,
        "model": s.model,
        "agents": list(s.agents),
        "cached": s.cached,
    }


def chunk(c: ai_pb2.Chunk) -> dict[str, Any]:
    return {"content": c.content, "agent": c.agent}


def source(s: ai_pb2.Source) -> dict[str, Any]:
    return {
        "n": s.n,
        "id": s.id,
        "namespace": s.namespace,
        "score": score(s.score),
        "text": s.text,
    }


def sources(s: ai_pb2.Sources) -> dict[str, Any]:
    return {"sources": [source(item) for item in s.sources]}


def part(p: ai_pb2.AgentPart) -> dict[str, Any]:
    return {
        "agent": p.agent,
        "model": p.model,
        "content": p.content,
        "usage": optional_usage(p),
    }


def done(d: ai_pb2.Done) -> dict[str, Any]:
    return {
        "answer": d.answer,
        "usage": optional_usage(d),
        "finish_reason": d.finish_reason,
        "parts": [part(p) for p in d.parts],
    }


def event(message: StreamEvent) -> Event | None:
    """One streamed event; None for a kind this gateway does not know (a newer service)."""
    kind = message.WhichOneof("event")
    if kind == "started":
        return "start", started(message.started)
    if kind == "chunk":
        return "chunk", chunk(message.chunk)
    if kind == "sources":
        return "sources", sources(message.sources)
    if kind == "done":
        return "done", done(message.done)
    return None


def whole(message: ai_pb2.ChatWholeResponse | ai_pb2.AnalyzeWholeResponse) -> dict[str, Any]:
    """A whole answer (ChatWhole, AnalyzeWhole) in the shape of `AnswerOut`."""
    return {
        **started(message.started),
        "sources": [source(item) for item in message.sources],
        **done(message.done),
    }


# -- the other answers ---------------------------------------------------------------------------
def search(r: ai_pb2.SearchResponse) -> dict[str, Any]:
    return {
        "hits": [
            {
                "id": h.id,
                "namespace": h.namespace,
                "score": score(h.score),
                "text": h.text,
                "metadata": struct(h.metadata),
            }
            for h in r.hits
        ],
        "summary": r.summary,
        "usage": optional_usage(r),
    }


def modes(r: ai_pb2.GetModeResponse) -> dict[str, Any]:
    return {
        "mode": r.mode,
        "modes": [
            {"name": m.name, "description": m.description, "model": m.model, "rag": m.rag}
            for m in r.modes
        ],
    }


def job_status(value: int) -> str:
    try:
        return enum_name("JOB_STATUS_", ai_pb2.JobStatus.Name(value)) or "unknown"  # type: ignore[arg-type]
    except ValueError:  # a status from a newer service than this gateway knows
        return "unknown"


def job(j: ai_pb2.Job) -> dict[str, Any]:
    return {
        "job_id": j.job_id,
        "status": job_status(j.status),
        "created_at": timestamp(j, "created_at"),
        "finished_at": timestamp(j, "finished_at"),
        "answer": j.answer or None,
        "usage": optional_usage(j),
        "conversation_id": j.conversation_id or None,
        "error": j.error or None,
    }


def conversation(c: ai_pb2.Conversation) -> dict[str, Any]:
    return {
        "conversation_id": c.conversation_id,
        "title": c.title,
        "mode": c.mode,
        "created_at": timestamp(c, "created_at"),
        "updated_at": timestamp(c, "updated_at"),
        "message_count": c.message_count,
    }


def conversations(r: ai_pb2.ListConversationsResponse, limit: int) -> dict[str, Any]:
    items = [conversation(c) for c in r.conversations]
    # A full page may have more behind it; the last one's update time is the next cursor.
    next_before = items[-1]["updated_at"] if items and len(items) >= limit else None
    return {"conversations": items, "next_before": next_before}


def conversation_detail(r: ai_pb2.GetConversationResponse) -> dict[str, Any]:
    return {
        "conversation": conversation(r.conversation),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "mode": m.mode,
                "model": m.model,
                "created_at": timestamp(m, "created_at"),
            }
            for m in r.messages
        ],
    }


def usage_report(r: ai_pb2.GetUsageResponse) -> dict[str, Any]:
    return {
        "days": [
            {
                "day": d.day,
                "model": d.model,
                "requests": d.requests,
                "prompt_tokens": d.prompt_tokens,
                "completion_tokens": d.completion_tokens,
                "cost_usd": finite(d.cost_usd),
                "cached_requests": d.cached_requests,
            }
            for d in r.days
        ],
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cost_usd": finite(r.cost_usd),
        "requests": r.requests,
    }


def performance(r: ai_pb2.GetPerformanceResponse) -> dict[str, Any]:
    return {
        "requests": r.requests,
        "latency_p50_ms": finite(r.latency_p50_ms),
        "latency_p95_ms": finite(r.latency_p95_ms),
        "cache_hit_rate": finite(r.cache_hit_rate),
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cost_usd": finite(r.cost_usd),
        "models": [
            {
                "model": m.model,
                "requests": m.requests,
                "latency_p50_ms": finite(m.latency_p50_ms),
                "latency_p95_ms": finite(m.latency_p95_ms),
                "first_token_p50_ms": finite(m.first_token_p50_ms),
                "first_token_p95_ms": finite(m.first_token_p95_ms),
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "cost_usd": finite(m.cost_usd),
                "cache_hit_rate": finite(m.cache_hit_rate),
            }
            for m in r.models
        ],
        "queue_depth": r.queue_depth,
        "in_flight": r.in_flight,
        "max_concurrency": r.max_concurrency,
        "cache_l1_entries": r.cache_l1_entries,
        "cache_l1_bytes": r.cache_l1_bytes,
    }
