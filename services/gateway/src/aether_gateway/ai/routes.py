"""`/api/ai/*` REST (+ the SSE stream) and `WS /ws/ai-chat`: each route parses, calls one
AiService RPC with the caller's token, and shapes the answer; ai's errors keep their meaning."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from starlette.routing import WebSocketRoute

from aether.ai.v1 import ai_pb2
from aether_common.access_tokens import AccessToken
from aether_common.errors import Forbidden
from aether_gateway.ai import convert
from aether_gateway.ai.client import AiClient, AiNotConfigured
from aether_gateway.ai.schemas import (
    ID_PATTERN,
    UUID_PATTERN,
    AnalyzeIn,
    AnswerOut,
    CacheInvalidatedOut,
    ChatIn,
    ConversationDetailOut,
    ConversationsOut,
    InvalidateCacheIn,
    JobOut,
    JobQueuedOut,
    ModeIn,
    ModeOut,
    ModesOut,
    PerformanceOut,
    SearchIn,
    SearchOut,
    UsageReportOut,
)
from aether_gateway.ai.sse import MEDIA_TYPE, EventStreamResponse
from aether_gateway.ai.stream import UpstreamProtocolError, answer_events
from aether_gateway.ai.ws import AiSession
from aether_gateway.deps import Caller, Resources, access_of, caller_of, resources_of
from aether_gateway.jobs import ai_generate
from aether_gateway.ws.session import SocketApp

AI_ADMIN_PERMISSION = "ai:admin"
ADMIN_ROLE = "admin"

router = APIRouter(prefix="/api/ai", tags=["ai"])
# A plain ASGI app, like chat's socket (ws.py).
router.routes.append(WebSocketRoute("/ws/ai-chat", SocketApp(AiSession), name="ai_chat_ws"))


async def get_ai(request: Request) -> AiClient:
    return ai_of(request)


def ai_of(request: Request) -> AiClient:
    ai = resources_of(request).ai
    if ai is None:
        raise AiNotConfigured()
    return ai


async def require_ai_admin(request: Request) -> AccessToken:
    """The admin role or `ai:admin`: checked here AND again by the service."""
    caller = caller_of(access_of(request))
    if ADMIN_ROLE in caller.roles or AI_ADMIN_PERMISSION in caller.permissions:
        return caller
    raise Forbidden(
        f"missing permission: {AI_ADMIN_PERMISSION}", metadata={"missing": AI_ADMIN_PERMISSION}
    )


Ai = Annotated[AiClient, Depends(get_ai)]
Admin = Annotated[AccessToken, Depends(require_ai_admin)]
JobIdPath = Annotated[str, Path(pattern=UUID_PATTERN, description="a UUID")]
ConversationIdPath = Annotated[str, Path(pattern=ID_PATTERN)]

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: start, chunk..., sources, done (or error)",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


def _answer_out(answer: ai_pb2.ChatWholeResponse | ai_pb2.AnalyzeWholeResponse) -> AnswerOut:
    if not answer.HasField("done"):
        raise UpstreamProtocolError("the ai service answered without finishing the answer")
    return AnswerOut.model_validate(convert.whole(answer))


async def chat_whole(ai: AiClient, request: ai_pb2.ChatRequest, caller: AccessToken) -> AnswerOut:
    whole = ai_pb2.ChatWholeRequest(request=request)
    answer = await ai.whole(ai.stub.ChatWhole, whole, token=caller.raw)
    return _answer_out(answer)


# -- answers -------------------------------------------------------------------------------------
@router.post("/chat", summary="One answer, whole (ChatWhole)")
async def chat(body: ChatIn, caller: Caller, ai: Ai) -> AnswerOut:
    return await chat_whole(ai, convert.chat_request(body), caller)


@router.post(
    "/chat/stream",
    summary="One answer as Server-Sent Events (Chat)",
    response_class=Response,
    responses=SSE_RESPONSES,
)
async def chat_stream(body: ChatIn, caller: Caller, ai: Ai, resources: Resources) -> Any:
    events = answer_events(ai, convert.chat_request(body), token=caller.raw, transport="sse")
    return EventStreamResponse(events, keepalive_s=resources.settings.ai_sse_keepalive_s)


@router.post("/analyze", summary="Stock analysis over the OHLCV bars sent, whole (AnalyzeWhole)")
async def analyze(body: AnalyzeIn, caller: Caller, ai: Ai) -> AnswerOut:
    whole = ai_pb2.AnalyzeWholeRequest(request=convert.analyze_request(body))
    answer = await ai.whole(ai.stub.AnalyzeWhole, whole, token=caller.raw)
    return _answer_out(answer)


@router.post("/search", summary="Semantic search plus a summary citing the hits (Search)")
async def search(body: SearchIn, caller: Caller, ai: Ai) -> SearchOut:
    request = ai_pb2.SearchRequest(
        query=body.query, namespace=body.namespace, limit=body.limit, no_summary=body.no_summary
    )
    answer = await ai.call(ai.stub.Search, request, token=caller.raw)
    return SearchOut.model_validate(convert.search(answer))


# -- modes ---------------------------------------------------------------------------------------
@router.get("/mode", summary="The caller's default mode and every mode they may use (GetMode)")
async def get_mode(caller: Caller, ai: Ai) -> ModesOut:
    answer = await ai.call(ai.stub.GetMode, ai_pb2.GetModeRequest(), token=caller.raw)
    return ModesOut.model_validate(convert.modes(answer))


@router.post("/mode", summary="Set the caller's default mode (SetMode)")
async def set_mode(body: ModeIn, caller: Caller, ai: Ai) -> ModeOut:
    answer = await ai.call(ai.stub.SetMode, ai_pb2.SetModeRequest(mode=body.mode), token=caller.raw)
    return ModeOut(mode=answer.mode)


# -- async generation ----------------------------------------------------------------------------
# Jobs are the worker's `ai.generate` jobs; these two routes keep their old shapes for clients
# written before it (docs/jobs-api.md, "The old ..."). A gateway without the worker (rolled out
# before it) keeps using ai's own job table.
@router.post(
    "/generate",
    summary="An answer now (async=false, whole) or as a background job (async=true: 202)",
    responses={202: {"model": JobQueuedOut, "description": "queued; poll GET /api/ai/jobs/{id}"}},
)
async def generate(
    body: ChatIn,
    caller: Caller,
    request: Request,
    run_async: Annotated[bool, Query(alias="async")] = False,
) -> Any:
    if not run_async:
        return await chat_whole(ai_of(request), convert.chat_request(body), caller)
    worker = resources_of(request).worker
    if worker is None:
        ai = ai_of(request)
        submit = ai_pb2.SubmitJobRequest(request=convert.chat_request(body))
        answer = await ai.call(ai.stub.SubmitJob, submit, token=caller.raw)
        job_id, status = answer.job.job_id, convert.job_status(answer.job.status)
    else:
        job = await ai_generate.submit(worker, body, caller)
        job_id, status = job.id, ai_generate.legacy_status(job.status)
    queued = JobQueuedOut.model_validate({"job_id": job_id, "status": status})
    return JSONResponse(
        queued.model_dump(),
        status_code=202,
        headers={"Location": f"/api/ai/jobs/{queued.job_id}"},
    )


@router.get(
    "/jobs/{job_id}",
    summary="A job of the caller's: the worker's ai.generate job, else one in ai's own table",
)
async def get_job(job_id: JobIdPath, caller: Caller, request: Request) -> JobOut:
    worker = resources_of(request).worker
    job = await ai_generate.find(worker, job_id, caller) if worker is not None else None
    if job is not None:
        return JobOut.model_validate(ai_generate.legacy_job(job))
    # A job ai ran itself, before the worker: its table keeps it until it ages out.
    ai = ai_of(request)
    answer_ai = await ai.call(ai.stub.GetJob, ai_pb2.GetJobRequest(job_id=job_id), token=caller.raw)
    return JobOut.model_validate(convert.job(answer_ai.job))


# -- conversations -------------------------------------------------------------------------------
@router.get("/conversations", summary="The caller's conversations, latest update first")
async def list_conversations(
    caller: Caller,
    ai: Ai,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[
        AwareDatetime | None,
        Query(description="RFC 3339: conversations updated before this (`next_before`)"),
    ] = None,
) -> ConversationsOut:
    request = ai_pb2.ListConversationsRequest(limit=limit)
    if before is not None:
        request.before.CopyFrom(convert.to_timestamp(before))
    answer = await ai.call(ai.stub.ListConversations, request, token=caller.raw)
    return ConversationsOut.model_validate(convert.conversations(answer, limit))


@router.get("/conversations/{conversation_id}", summary="A conversation and its messages")
async def get_conversation(
    conversation_id: ConversationIdPath, caller: Caller, ai: Ai
) -> ConversationDetailOut:
    request = ai_pb2.GetConversationRequest(conversation_id=conversation_id)
    answer = await ai.call(ai.stub.GetConversation, request, token=caller.raw)
    return ConversationDetailOut.model_validate(convert.conversation_detail(answer))


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a conversation of the caller's",
)
async def delete_conversation(
    conversation_id: ConversationIdPath, caller: Caller, ai: Ai
) -> Response:
    request = ai_pb2.DeleteConversationRequest(conversation_id=conversation_id)
    await ai.call(ai.stub.DeleteConversation, request, token=caller.raw)
    return Response(status_code=204)


# -- usage and admin -----------------------------------------------------------------------------
@router.get("/usage", summary="The caller's usage per day and model (GetUsage)")
async def usage(
    caller: Caller, ai: Ai, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> UsageReportOut:
    answer = await ai.call(ai.stub.GetUsage, ai_pb2.GetUsageRequest(days=days), token=caller.raw)
    return UsageReportOut.model_validate(convert.usage_report(answer))


@router.get(
    "/admin/performance",
    summary="Admin: latency percentiles, cache hit rate, queue depth, tokens and cost",
)
async def performance(
    admin: Admin, ai: Ai, window_minutes: Annotated[int, Query(ge=1, le=10_080)] = 60
) -> PerformanceOut:
    request = ai_pb2.GetPerformanceRequest(window_minutes=window_minutes)
    answer = await ai.call(ai.stub.GetPerformance, request, token=admin.raw)
    return PerformanceOut.model_validate(convert.performance(answer))


@router.post("/admin/cache/invalidate", summary="Admin: drop cached answers (all, or one mode's)")
async def invalidate_cache(
    admin: Admin, ai: Ai, body: InvalidateCacheIn | None = None
) -> CacheInvalidatedOut:
    mode = body.mode if body is not None and body.mode is not None else ""
    answer = await ai.call(
        ai.stub.InvalidateCache, ai_pb2.InvalidateCacheRequest(mode=mode), token=admin.raw
    )
    return CacheInvalidatedOut(removed=answer.removed)
