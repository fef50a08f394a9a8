"""chat's ChatService over one shared gRPC channel, every call made with the caller's token.

Failures become the typed errors of aether_common.errors (upstream.upstream_error), so a
PERMISSION_DENIED from chat is a 403 on REST and an `{"type":"error","code":"forbidden"}` frame
on the WebSocket.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_common.errors import Unavailable
from aether_common.grpc import create_channel
from aether_common.identity import AUTHORIZATION_KEY
from aether_common.logging import get_logger
from aether_gateway.upstream import HEALTH_TIMEOUT_S, upstream_error

CHAT_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
# Safe to retry when chat is briefly unreachable: reads, and writes that are idempotent by
# contract (SendMessage by client_msg_id, MarkRead never moves back, presence is a heartbeat).
IDEMPOTENT_METHODS = [
    f"{CHAT_SERVICE}/{method}"
    for method in (
        "GetRoom",
        "ListMyRooms",
        "ListMembers",
        "CheckMembership",
        "GetHistory",
        "GetPresence",
        "SendMessage",
        "MarkRead",
        "UpdatePresence",
    )
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")

log = get_logger(__name__)


class ChatNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "chat is not configured on this gateway (AETHER_CHAT_GRPC_TARGET)",
            code="chat_not_configured",
        )


class ChatClient:
    name = "chat"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub = chat_pb2_grpc.ChatServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    @classmethod
    def connect(cls, target: str, *, timeout_s: float) -> ChatClient:
        channel = create_channel(
            target, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout_s
        )
        return cls(channel)

    async def call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        token: str,
    ) -> Resp:
        """`await chat.call(chat.stub.GetRoom, GetRoomRequest(...), token=caller.raw)`."""
        metadata = grpc.aio.Metadata((AUTHORIZATION_KEY, f"Bearer {token}"))
        try:
            return await rpc(request, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            error = upstream_error(exc, self.name)
            if error.http_status >= 500:
                log.warning("chat call failed", code=exc.code().name, error=error.error_code)
            raise error from exc

    async def healthy(self) -> bool:
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=CHAT_SERVICE), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.channel.close(grace=None)
