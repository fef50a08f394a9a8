"""ai's AiService over one shared gRPC channel, every call made with the caller's token.

Unary calls go through ServiceClient.call (typed errors, as for auth and chat), whole answers
(ChatWhole, AnalyzeWhole) through `whole`, with an answer's deadline; the streamed answers (Chat,
Analyze) through `stream`, which cancels the call whenever its reader stops early (client gone,
cancel frame), so the service frees the model slot at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TypeVar

import grpc

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether_common.errors import AetherError, Unavailable
from aether_common.grpc import create_channel
from aether_common.identity import AUTHORIZATION_KEY
from aether_common.logging import get_logger
from aether_gateway.upstream import ServiceClient, upstream_error

AI_SERVICE = ai_pb2.DESCRIPTOR.services_by_name["AiService"].full_name
# Retried when ai is briefly unreachable: reads and settings that land the same way twice.
# Never Chat/Analyze/Search/SubmitJob: they spend model time, and an `ai_busy` UNAVAILABLE must
# reach the client (Retry-After) rather than be retried into a full queue.
IDEMPOTENT_METHODS = [
    f"{AI_SERVICE}/{method}"
    for method in (
        "GetMode",
        "SetMode",
        "GetJob",
        "ListConversations",
        "GetConversation",
        "GetUsage",
        "GetPerformance",
    )
]
AI_BUSY = "ai_busy"

Req = TypeVar("Req")
Resp = TypeVar("Resp")

log = get_logger(__name__)


class AiNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "ai is not configured on this gateway (AETHER_AI_GRPC_TARGET)",
            code="ai_not_configured",
        )


class AiClient(ServiceClient):
    """ai's AiService; every call carries the caller's token."""

    name = "ai"
    service = AI_SERVICE

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        busy_retry_after_s: int,
        answer_timeout_s: float | None = None,
    ) -> None:
        super().__init__(channel)
        self.stub = ai_pb2_grpc.AiServiceStub(channel)
        self.busy_retry_after_s = busy_retry_after_s
        self.answer_timeout_s = answer_timeout_s

    @classmethod
    def connect(
        cls, target: str, *, timeout_s: float, stream_timeout_s: float, busy_retry_after_s: int
    ) -> AiClient:
        channel = create_channel(
            target,
            idempotent_methods=IDEMPOTENT_METHODS,
            default_timeout=timeout_s,
            default_stream_timeout=stream_timeout_s,
        )
        return cls(
            channel, busy_retry_after_s=busy_retry_after_s, answer_timeout_s=stream_timeout_s
        )

    def _busy_hint(self, error: AetherError) -> AetherError:
        # Every slot busy: the client should come back, and the 503 says when.
        if error.error_code == AI_BUSY and error.retry_after is None:
            error.retry_after = self.busy_retry_after_s
        return error

    async def call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        token: str | None = None,
        deadline_s: float | None = None,
    ) -> Resp:
        try:
            return await super().call(rpc, request, token=token, deadline_s=deadline_s)
        except AetherError as error:
            self._busy_hint(error)
            raise

    async def whole(
        self, rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req, *, token: str
    ) -> Resp:
        """A whole answer: a unary call with a streamed answer's deadline (queue wait plus
        generation), not the short one of the other unary calls."""
        return await self.call(rpc, request, token=token, deadline_s=self.answer_timeout_s)

    async def stream(
        self,
        rpc: grpc.aio.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        *,
        token: str,
    ) -> AsyncGenerator[Resp, None]:
        """The call's responses; a failure raises the typed error. Closing the iterator (or
        cancelling its reader) cancels the call."""
        call = rpc(request, metadata=grpc.aio.Metadata((AUTHORIZATION_KEY, f"Bearer {token}")))
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            error = self._busy_hint(upstream_error(exc, self.name))
            if error.http_status >= 500:
                log.warning(
                    "upstream stream failed",
                    service=self.name,
                    code=exc.code().name,
                    error=error.error_code,
                )
            raise error from exc
        finally:
            call.cancel()  # a no-op once the call has ended
