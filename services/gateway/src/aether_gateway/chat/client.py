"""chat's ChatService over one shared gRPC channel, every call made with the caller's token.

Failures become the typed errors of aether_common.errors (ServiceClient), so a
PERMISSION_DENIED from chat is a 403 on REST and an `{"type":"error","code":"forbidden"}` frame
on the WebSocket.
"""

from __future__ import annotations

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_common.errors import Unavailable
from aether_common.grpc import Peer, ServiceClient

CHAT = Peer(
    "chat",
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    chat_pb2_grpc.ChatServiceStub,
    # Safe to retry when chat is briefly unreachable: reads, and writes that are idempotent by
    # contract (SendMessage by client_msg_id, MarkRead never moves back, presence a heartbeat).
    idempotent=(
        "GetRoom",
        "ListMyRooms",
        "ListMembers",
        "CheckMembership",
        "GetHistory",
        "GetPresence",
        "SendMessage",
        "MarkRead",
        "UpdatePresence",
    ),
)


class ChatNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "chat is not configured on this gateway (AETHER_CHAT_GRPC_TARGET)",
            code="chat_not_configured",
        )


class ChatClient(ServiceClient["chat_pb2_grpc.ChatServiceAsyncStub"]):
    """chat's ChatService; every call carries the caller's token."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(CHAT, target, timeout_s=timeout_s)
