"""Conversions between ai.v1 protobuf and the service's plain records (records.py): requests
into records, results back into ai.v1 messages, for the gRPC edge (grpc.py). Also the two
protobuf encodings stored at rest (a job's request as a ChatRequest, its usage as a Usage) and
the memory service's search hits read into records. The service and the stores never touch
protobuf otherwise; the published event's payload is built in events.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether_ai.records import (
    AgentPart,
    AnalyzeQuery,
    AnswerEvent,
    Bar,
    ChatQuery,
    Chunk,
    ConversationDetail,
    ConversationInfo,
    Done,
    Job,
    Modes,
    Performance,
    SearchHit,
    SearchQuery,
    SearchResult,
    Source,
    Sources,
    Started,
    Usage,
    UsageReport,
)

_STATUS = {
    "queued": ai_pb2.JOB_STATUS_QUEUED,
    "running": ai_pb2.JOB_STATUS_RUNNING,
    "succeeded": ai_pb2.JOB_STATUS_SUCCEEDED,
    "failed": ai_pb2.JOB_STATUS_FAILED,
}


# -- requests ----------------------------------------------------------------------------------
def chat_query(request: ai_pb2.ChatRequest) -> ChatQuery:
    return ChatQuery(
        message=request.message,
        mode=request.mode,
        model=request.model,
        conversation_id=request.conversation_id,
        agents=tuple(request.agents),
        no_cache=request.no_cache,
    )


def chat_request(query: ChatQuery) -> ai_pb2.ChatRequest:
    return ai_pb2.ChatRequest(
        message=query.message,
        mode=query.mode,
        model=query.model,
        conversation_id=query.conversation_id,
        agents=query.agents,
        no_cache=query.no_cache,
    )


def analyze_query(request: ai_pb2.AnalyzeRequest) -> AnalyzeQuery:
    return AnalyzeQuery(
        symbol=request.symbol,
        bars=[
            Bar(
                time=(b.time.seconds + b.time.nanos / 1e9) if b.HasField("time") else None,
                open=b.open,
                high=b.high,
                low=b.low,
                close=b.close,
                volume=b.volume,
            )
            for b in request.bars
        ],
        question=request.question,
        model=request.model,
        no_cache=request.no_cache,
        interval=request.interval,
    )


def search_query(request: ai_pb2.SearchRequest) -> SearchQuery:
    return SearchQuery(
        query=request.query,
        namespace=request.namespace,
        limit=request.limit,
        no_summary=request.no_summary,
    )


def before(request: ai_pb2.ListConversationsRequest) -> datetime | None:
    """The page cursor, naive UTC as protobuf gives it (the store reads it as UTC)."""
    return request.before.ToDatetime() if request.HasField("before") else None


# -- answers -----------------------------------------------------------------------------------
def usage_pb(usage: Usage) -> ai_pb2.Usage:
    return ai_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cost_usd=usage.cost_usd,
        latency_ms=usage.latency_ms,
        first_token_ms=usage.first_token_ms,
        cached=usage.cached,
        model=usage.model,
    )


def _usage(message: ai_pb2.Usage) -> Usage:
    return Usage(
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        total_tokens=message.total_tokens,
        cost_usd=message.cost_usd,
        latency_ms=message.latency_ms,
        first_token_ms=message.first_token_ms,
        cached=message.cached,
        model=message.model,
    )


def started_pb(started: Started) -> ai_pb2.Started:
    return ai_pb2.Started(
        request_id=started.request_id,
        conversation_id=started.conversation_id,
        mode=started.mode,
        model=started.model,
        agents=started.agents,
        cached=started.cached,
    )


def source_pb(source: Source) -> ai_pb2.Source:
    return ai_pb2.Source(
        n=source.n, id=source.id, namespace=source.namespace, score=source.score, text=source.text
    )


def _part_pb(part: AgentPart) -> ai_pb2.AgentPart:
    return ai_pb2.AgentPart(
        agent=part.agent, model=part.model, content=part.content, usage=usage_pb(part.usage)
    )


def done_pb(done: Done) -> ai_pb2.Done:
    return ai_pb2.Done(
        answer=done.answer,
        usage=usage_pb(done.usage),
        finish_reason=done.finish_reason,
        parts=[_part_pb(part) for part in done.parts],
    )


def chat_response(event: AnswerEvent) -> ai_pb2.ChatResponse:
    # Chunk first: it is nearly every event of a stream.
    if isinstance(event, Chunk):
        return ai_pb2.ChatResponse(chunk=ai_pb2.Chunk(content=event.content, agent=event.agent))
    if isinstance(event, Started):
        return ai_pb2.ChatResponse(started=started_pb(event))
    if isinstance(event, Sources):
        return ai_pb2.ChatResponse(
            sources=ai_pb2.Sources(sources=[source_pb(s) for s in event.sources])
        )
    return ai_pb2.ChatResponse(done=done_pb(event))


def analyze_response(event: AnswerEvent) -> ai_pb2.AnalyzeResponse:
    if isinstance(event, Chunk):
        return ai_pb2.AnalyzeResponse(chunk=ai_pb2.Chunk(content=event.content, agent=event.agent))
    if isinstance(event, Started):
        return ai_pb2.AnalyzeResponse(started=started_pb(event))
    if isinstance(event, Sources):
        return ai_pb2.AnalyzeResponse(
            sources=ai_pb2.Sources(sources=[source_pb(s) for s in event.sources])
        )
    return ai_pb2.AnalyzeResponse(done=done_pb(event))


def search_response(result: SearchResult) -> ai_pb2.SearchResponse:
    response = ai_pb2.SearchResponse(
        hits=[
            ai_pb2.SearchHit(
                id=hit.id,
                namespace=hit.namespace,
                score=hit.score,
                text=hit.text,
                metadata=_struct(hit.metadata),
            )
            for hit in result.hits
        ],
        summary=result.summary,
    )
    if result.usage is not None:
        response.usage.CopyFrom(usage_pb(result.usage))
    return response


def memory_hit(hit: Any, namespace: str) -> SearchHit:
    """A memory.v1 SearchHit (what rag.MemoryClient returns) as a record."""
    return SearchHit(
        id=hit.record.id,
        namespace=namespace,
        score=hit.score,
        text=hit.record.text,
        metadata=json_format.MessageToDict(hit.record.metadata),
    )


def _struct(values: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


# -- modes, jobs, conversations, usage ---------------------------------------------------------
def modes_response(modes: Modes) -> ai_pb2.GetModeResponse:
    return ai_pb2.GetModeResponse(
        mode=modes.mode,
        modes=[
            ai_pb2.ModeInfo(name=m.name, description=m.description, model=m.model, rag=m.rag)
            for m in modes.modes
        ],
    )


def job_pb(job: Job) -> ai_pb2.Job:
    message = ai_pb2.Job(
        job_id=job.job_id,
        status=_STATUS[job.status],
        created_at=_timestamp(job.created_at),
        answer=job.answer,
        conversation_id=job.conversation_id,
        error=job.error,
    )
    if job.finished_at is not None:
        message.finished_at.CopyFrom(_timestamp(job.finished_at))
    if job.usage is not None:
        message.usage.CopyFrom(usage_pb(job.usage))
    return message


def conversation_pb(info: ConversationInfo) -> ai_pb2.Conversation:
    return ai_pb2.Conversation(
        conversation_id=info.conversation_id,
        title=info.title,
        mode=info.mode,
        created_at=_timestamp(info.created_at),
        updated_at=_timestamp(info.updated_at),
        message_count=info.message_count,
    )


def conversations_response(
    conversations: Sequence[ConversationInfo],
) -> ai_pb2.ListConversationsResponse:
    return ai_pb2.ListConversationsResponse(
        conversations=[conversation_pb(c) for c in conversations]
    )


def conversation_response(detail: ConversationDetail) -> ai_pb2.GetConversationResponse:
    return ai_pb2.GetConversationResponse(
        conversation=conversation_pb(detail.conversation),
        messages=[
            ai_pb2.ConversationMessage(
                role=m.role,
                content=m.content,
                mode=m.mode,
                model=m.model,
                created_at=_timestamp(m.created_at),
            )
            for m in detail.messages
        ],
    )


def usage_response(report: UsageReport) -> ai_pb2.GetUsageResponse:
    return ai_pb2.GetUsageResponse(
        days=[
            ai_pb2.UsageDay(
                day=d.day,
                model=d.model,
                requests=d.requests,
                prompt_tokens=d.prompt_tokens,
                completion_tokens=d.completion_tokens,
                cost_usd=d.cost_usd,
                cached_requests=d.cached_requests,
            )
            for d in report.days
        ],
        requests=report.requests,
        prompt_tokens=report.prompt_tokens,
        completion_tokens=report.completion_tokens,
        cost_usd=report.cost_usd,
    )


def performance_response(p: Performance) -> ai_pb2.GetPerformanceResponse:
    return ai_pb2.GetPerformanceResponse(
        requests=p.requests,
        latency_p50_ms=p.latency_p50_ms,
        latency_p95_ms=p.latency_p95_ms,
        cache_hit_rate=p.cache_hit_rate,
        prompt_tokens=p.prompt_tokens,
        completion_tokens=p.completion_tokens,
        cost_usd=p.cost_usd,
        models=[
            ai_pb2.ModelPerformance(
                model=m.model,
                requests=m.requests,
                latency_p50_ms=m.latency_p50_ms,
                latency_p95_ms=m.latency_p95_ms,
                first_token_p50_ms=m.first_token_p50_ms,
                first_token_p95_ms=m.first_token_p95_ms,
                prompt_tokens=m.prompt_tokens,
                completion_tokens=m.completion_tokens,
                cost_usd=m.cost_usd,
                cache_hit_rate=m.cache_hit_rate,
            )
            for m in p.models
        ],
        queue_depth=p.queue_depth,
        in_flight=p.in_flight,
        max_concurrency=p.max_concurrency,
        cache_l1_entries=p.cache_l1_entries,
        cache_l1_bytes=p.cache_l1_bytes,
    )


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


# -- stored encodings (ai_jobs.request, ai_jobs.usage) -----------------------------------------
def chat_request_bytes(query: ChatQuery) -> bytes:
    return chat_request(query).SerializeToString()


def chat_query_from_bytes(data: bytes) -> ChatQuery:
    return chat_query(ai_pb2.ChatRequest.FromString(data))


def usage_bytes(usage: Usage) -> bytes:
    return usage_pb(usage).SerializeToString()


def usage_from_bytes(data: bytes) -> Usage:
    return _usage(ai_pb2.Usage.FromString(data))
