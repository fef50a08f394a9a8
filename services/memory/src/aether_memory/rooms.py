"""Room membership, asked of the chat service (CheckMembership) with the caller's own token:
the outgoing gRPC interceptor forwards the verified caller's `authorization`, so chat answers
for that user and nobody can ask about someone else."""

from __future__ import annotations

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_common.grpc import Peer, ServiceClient

CHAT = Peer(
    "chat",
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    chat_pb2_grpc.ChatServiceStub,
    idempotent=("CheckMembership",),  # a read: safe to retry while chat restarts
)


class RoomMembership(ServiceClient["chat_pb2_grpc.ChatServiceAsyncStub"]):
    """Component: the channel to chat (opened at start). Readiness does not wait on chat: only
    room-scoped records need it, and those calls answer UNAVAILABLE while it is away."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(
            CHAT, target, timeout_s=timeout_s, needs_peer=False, name="chat-membership"
        )

    async def is_member(self, room_id: str) -> bool:
        """Whether the current caller is a member of `room_id` (chat's typed errors pass on)."""
        response = await self.call(
            self.stub.CheckMembership, chat_pb2.CheckMembershipRequest(room_ids=[room_id])
        )
        return room_id in response.member_of
