"""The AiService gRPC servicer: identify the caller, call the service, answer. Every RPC is
"caller" (ai.proto): no verified token, no call. Errors are typed (aether_common.errors) and
mapped by the server's interceptor; Chat and Analyze stream their events as they come,
ChatWhole and AnalyzeWhole answer once with the whole; a client that cancels stops the
generation (service.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, TypeVar

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether_ai.callers import require_admin, require_caller
from aether_ai.service import AiService
from aether_common.grpc.interceptors import Context

SERVICE_NAME = ai_pb2.DESCRIPTOR.services_by_name["AiService"].full_name


def register(servicer: AiServicer, server: Any) -> None:
    ai_pb2_grpc.add_AiServiceServicer_to_server(servicer, server)


Whole = TypeVar("Whole", ai_pb2.ChatWholeResponse, ai_pb2.AnalyzeWholeResponse)


async def _whole(
    events: AsyncGenerator[ai_pb2.ChatResponse | ai_pb2.AnalyzeResponse, None], whole: Whole
) -> Whole:
    """The answer's Started, Sources and Done in one message (a cancelled call closes the
    generator, and so frees its model slot, before this returns)."""
    async with aclosing(events):
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "started":
                whole.started.CopyFrom(event.started)
            elif kind == "sources":
                whole.sources.extend(event.sources.sources)
            elif kind == "done":
                whole.done.CopyFrom(event.done)
    return whole


class AiServicer(ai_pb2_grpc.AiServiceServicer):
    def __init__(self, service: AiService) -> None:
        self._service = service

    # -- answers -------------------------------------------------------------------------------
    # The service's own generators, returned as they are: the server interceptor iterates
    # (and, when the call ends early, closes) them, with no relaying layer per message here.
    def Chat(
        self, request: ai_pb2.ChatRequest, context: Context
    ) -> AsyncIterator[ai_pb2.ChatResponse]:
        return self._service.chat(require_caller(), request)

    def Analyze(
        self, request: ai_pb2.AnalyzeRequest, context: Context
    ) -> AsyncIterator[ai_pb2.AnalyzeResponse]:
        return self._service.analyze(require_caller(), request)

    async def ChatWhole(
        self, request: ai_pb2.ChatWholeRequest, context: Context
    ) -> ai_pb2.ChatWholeResponse:
        events = self._service.chat(require_caller(), request.request, chunks=False)
        return await _whole(events, ai_pb2.ChatWholeResponse())

    async def AnalyzeWhole(
        self, request: ai_pb2.AnalyzeWholeRequest, context: Context
    ) -> ai_pb2.AnalyzeWholeResponse:
        events = self._service.analyze(require_caller(), request.request, chunks=False)
        return await _whole(events, ai_pb2.AnalyzeWholeResponse())

    async def Search(
        self, request: ai_pb2.SearchRequest, context: Context
    ) -> ai_pb2.SearchResponse:
        return await self._service.search(require_caller(), request)

    # -- modes ---------------------------------------------------------------------------------
    async def GetMode(
        self, request: ai_pb2.GetModeRequest, context: Context
    ) -> ai_pb2.GetModeResponse:
        return await self._service.get_mode(require_caller())

    async def SetMode(
        self, request: ai_pb2.SetModeRequest, context: Context
    ) -> ai_pb2.SetModeResponse:
        return await self._service.set_mode(require_caller(), request.mode)

    # -- jobs ----------------------------------------------------------------------------------
    async def SubmitJob(
        self, request: ai_pb2.SubmitJobRequest, context: Context
    ) -> ai_pb2.SubmitJobResponse:
        job = await self._service.submit_job(require_caller(), request)
        return ai_pb2.SubmitJobResponse(job=job)

    async def GetJob(
        self, request: ai_pb2.GetJobRequest, context: Context
    ) -> ai_pb2.GetJobResponse:
        job = await self._service.get_job(require_caller(), request.job_id)
        return ai_pb2.GetJobResponse(job=job)

    # -- conversations -------------------------------------------------------------------------
    async def ListConversations(
        self, request: ai_pb2.ListConversationsRequest, context: Context
    ) -> ai_pb2.ListConversationsResponse:
        return await self._service.list_conversations(require_caller(), request)

    async def GetConversation(
        self, request: ai_pb2.GetConversationRequest, context: Context
    ) -> ai_pb2.GetConversationResponse:
        return await self._service.get_conversation(require_caller(), request.conversation_id)

    async def DeleteConversation(
        self, request: ai_pb2.DeleteConversationRequest, context: Context
    ) -> ai_pb2.DeleteConversationResponse:
        await self._service.delete_conversation(require_caller(), request.conversation_id)
        return ai_pb2.DeleteConversationResponse()

    # -- usage and admin -----------------------------------------------------------------------
    async def GetUsage(
        self, request: ai_pb2.GetUsageRequest, context: Context
    ) -> ai_pb2.GetUsageResponse:
        return await self._service.usage(require_caller(), request.days)

    async def GetPerformance(
        self, request: ai_pb2.GetPerformanceRequest, context: Context
    ) -> ai_pb2.GetPerformanceResponse:
        require_admin()
        return await self._service.performance(request.window_minutes)

    async def InvalidateCache(
        self, request: ai_pb2.InvalidateCacheRequest, context: Context
    ) -> ai_pb2.InvalidateCacheResponse:
        require_admin()
        removed = await self._service.invalidate_cache(request.mode)
        return ai_pb2.InvalidateCacheResponse(removed=removed)
