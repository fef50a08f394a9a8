"""ai's AiService over one shared gRPC channel, every call made with the caller's token.

Unary calls go through ServiceClient.call (typed errors, as for auth and chat), whole answers
(ChatWhole, AnalyzeWhole) through `whole`, with an answer's deadline; the streamed answers (Chat,
Analyze) through ServiceClient.stream, which cancels the call whenever its reader stops early
(client gone, cancel frame), so the service frees the model slot at once.
"""

from __future__ import annotations

from typing import TypeVar

import grpc

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether_common.errors import AetherError, Unavailable
from aether_common.grpc import Peer, ServiceClient

AI = Peer(
    "ai",
    ai_pb2.DESCRIPTOR.services_by_name["AiService"],
    ai_pb2_grpc.AiServiceStub,
    # Retried when ai is briefly unreachable: reads and settings that land the same way twice.
    # Never Chat/Analyze/Search/SubmitJob: they spend model time, and an `ai_busy` UNAVAILABLE
    # must reach the client (Retry-After) rather than be retried into a full queue.
    idempotent=(
        "GetMode",
        "SetMode",
        "GetJob",
        "ListConversations",
        "GetConversation",
        "GetUsage",
        "GetPerformance",
    ),
)
AI_BUSY = "ai_busy"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AiNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "ai is not configured on this gateway (AETHER_AI_GRPC_TARGET)",
            code="ai_not_configured",
        )


class AiClient(ServiceClient["ai_pb2_grpc.AiServiceAsyncStub"]):
    """ai's AiService; every call carries the caller's token. Streams (and whole answers) get
    `stream_timeout_s`: queue wait plus generation."""

    def __init__(
        self, target: str, *, timeout_s: float, stream_timeout_s: float, busy_retry_after_s: int
    ) -> None:
        super().__init__(AI, target, timeout_s=timeout_s, stream_timeout_s=stream_timeout_s)
        self.busy_retry_after_s = busy_retry_after_s

    def error(self, exc: grpc.aio.AioRpcError) -> AetherError:
        error = super().error(exc)
        # Every slot busy: the client should come back, and the 503 says when.
        if error.error_code == AI_BUSY and error.retry_after is None:
            error.retry_after = self.busy_retry_after_s
        return error

    async def whole(
        self, rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req, *, token: str
    ) -> Resp:
        """A whole answer: a unary call with a streamed answer's deadline (queue wait plus
        generation), not the short one of the other unary calls."""
        return await self.call(rpc, request, token=token, deadline_s=self.stream_timeout_s)
