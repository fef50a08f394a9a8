"""The AiService gRPC servicer: identify the caller, read the request into records
(schemas.py), call the service, answer in ai.v1 messages. Every RPC is "caller" (ai.proto): no
verified token, no call. Errors are typed (aether_common.errors) and mapped by the server's
interceptor; Chat and Analyze stream their events as they come, ChatWhole and AnalyzeWhole
answer once with the whole; a client that cancels stops the generation (service.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether_ai import schemas
from aether_ai.callers import require_admin, require_caller
from aether_ai.records import AnswerEvent, Chunk, Done, Sources, Started
from aether_ai.service import AiService
from aether_common.grpc.interceptors import Context

SERVICE_NAME = ai_pb2.DESCRIPTOR.services_by_name["AiService"].full_name

Event = TypeVar("Event", ai_pb2.ChatResponse, ai_pb2.AnalyzeResponse)
Whole = TypeVar("Whole", ai_pb2.ChatWholeResponse, ai_pb2.AnalyzeWholeResponse)


def register(servicer: AiServicer, server: Any) -> None:
    ai_pb2_grpc.add_AiServiceServicer_to_server(servicer, server)


async def _stream(
    events: AsyncGenerator[AnswerEvent, None], message: Callable[[AnswerEvent], Event]
) -> AsyncGenerator[Event, None]:
    """The service's events as messages. The server interceptor closes this generator when the
    call ends early, and closing it closes the service's (which frees the model slot)."""
    async with aclosing(events):
        async for event in events:
            yield message(event)


async def _whole(events: AsyncGenerator[AnswerEvent, None], whole: Whole) -> Whole:
    """The answer's Started, Sources and Done in one message (a cancelled call closes the
    generator, and so frees its model slot, before this returns)."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Chunk):
                continue
            if isinstance(event, Started):
                whole.started.CopyFrom(schemas.started_pb(event))
            elif isinstance(event, Sources):
                whole.sources.extend(schemas.source_pb(s) for s in event.sources)
            elif isinstance(event, Done):
                whole.done.CopyFrom(schemas.done_pb(event))
    return whole


class AiServicer(ai_pb2_grpc.AiServiceServicer):
    def __init__(self, service: AiService) -> None:
        self._service = service

    # -- answers -------------------------------------------------------------------------------
    def Chat(
        self, request: ai_pb2.ChatRequest, context: Context
    ) -> AsyncGenerator[ai_pb2.ChatResponse, None]:
        events = self._service.chat(require_caller(), schemas.chat_query(request))
        return _stream(events, schemas.chat_response)

    def Analyze(
        self, request: ai_pb2.AnalyzeRequest, context: Context
    ) -> AsyncGenerator[ai_pb2.AnalyzeResponse, None]:
        events = self._service.analyze(require_caller(), schemas.analyze_query(request))
        return _stream(events, schemas.analyze_response)

    async def ChatWhole(
        self, request: ai_pb2.ChatWholeRequest, context: Context
    ) -> ai_pb2.ChatWholeResponse:
        query = schemas.chat_query(request.request)
        events = self._service.chat(require_caller(), query, chunks=False)
        return await _whole(events, ai_pb2.ChatWholeResponse())

    async def AnalyzeWhole(
        self, request: ai_pb2.AnalyzeWholeRequest, context: Context
    ) -> ai_pb2.AnalyzeWholeResponse:
        query = schemas.analyze_query(request.request)
        events = self._service.analyze(require_caller(), query, chunks=False)
        return await _whole(events, ai_pb2.AnalyzeWholeResponse())

    async def Search(
        self, request: ai_pb2.SearchRequest, context: Context
    ) -> ai_pb2.SearchResponse:
        result = await self._service.search(require_caller(), schemas.search_query(request))
        return schemas.search_response(result)

    # -- modes ---------------------------------------------------------------------------------
    async def GetMode(
        self, request: ai_pb2.GetModeRequest, context: Context
    ) -> ai_pb2.GetModeResponse:
        return schemas.modes_response(await self._service.get_mode(require_caller()))

    async def SetMode(
        self, request: ai_pb2.SetModeRequest, context: Context
    ) -> ai_pb2.SetModeResponse:
        mode = await self._service.set_mode(require_caller(), request.mode)
        return ai_pb2.SetModeResponse(mode=mode)

    # -- jobs ----------------------------------------------------------------------------------
    async def SubmitJob(
        self, request: ai_pb2.SubmitJobRequest, context: Context
    ) -> ai_pb2.SubmitJobResponse:
        query = schemas.chat_query(request.request) if request.HasField("request") else None
        job = await self._service.submit_job(require_caller(), query)
        return ai_pb2.SubmitJobResponse(job=schemas.job_pb(job))

    async def GetJob(
        self, request: ai_pb2.GetJobRequest, context: Context
    ) -> ai_pb2.GetJobResponse:
        job = await self._service.get_job(require_caller(), request.job_id)
        return ai_pb2.GetJobResponse(job=schemas.job_pb(job))

    # -- conversations -------------------------------------------------------------------------
    async def ListConversations(
        self, request: ai_pb2.ListConversationsRequest, context: Context
    ) -> ai_pb2.ListConversationsResponse:
        found = await self._service.list_conversations(
            require_caller(), request.limit, schemas.before(request)
        )
        return schemas.conversations_response(found)

    async def GetConversation(
        self, request: ai_pb2.GetConversationRequest, context: Context
    ) -> ai_pb2.GetConversationResponse:
        detail = await self._service.get_conversation(require_caller(), request.conversation_id)
        return schemas.conversation_response(detail)

    async def DeleteConversation(
        self, request: ai_pb2.DeleteConversationRequest, context: Context
    ) -> ai_pb2.DeleteConversationResponse:
        await self._service.delete_conversation(require_caller(), request.conversation_id)
        return ai_pb2.DeleteConversationResponse()

    # -- usage and admin -----------------------------------------------------------------------
    async def GetUsage(
        self, request: ai_pb2.GetUsageRequest, context: Context
    ) -> ai_pb2.GetUsageResponse:
        report = await self._service.usage(require_caller(), request.days)
        return schemas.usage_response(report)

    async def GetPerformance(
        self, request: ai_pb2.GetPerformanceRequest, context: Context
    ) -> ai_pb2.GetPerformanceResponse:
        require_admin()
        performance = await self._service.performance(request.window_minutes)
        return schemas.performance_response(performance)

    async def InvalidateCache(
        self, request: ai_pb2.InvalidateCacheRequest, context: Context
    ) -> ai_pb2.InvalidateCacheResponse:
        require_admin()
        removed = await self._service.invalidate_cache(request.mode)
        return ai_pb2.InvalidateCacheResponse(removed=removed)

    # -- GDPR ----------------------------------------------------------------------------------
    async def ExportMyData(
        self, request: ai_pb2.ExportMyDataRequest, context: Context
    ) -> ai_pb2.ExportMyDataResponse:
        document = await self._service.export_my_data(require_caller())
        return ai_pb2.ExportMyDataResponse(json=document)
