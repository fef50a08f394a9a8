"""Room membership, asked of the chat service (CheckMembership) with the caller's own token:
the outgoing gRPC interceptor forwards the verified caller's `authorization`, so chat answers
for that user and nobody can ask about someone else."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_common.grpc import create_channel, rpc_errors

CHAT_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
if TYPE_CHECKING:  # only the type stubs know the async stub class
    ChatStub = chat_pb2_grpc.ChatServiceAsyncStub
else:
    ChatStub = chat_pb2_grpc.ChatServiceStub


class RoomMembership:
    """Component: the channel to chat (opened at start)."""

    name = "chat-membership"

    def __init__(self, target: str, *, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: ChatStub | None = None

    async def start(self) -> None:
        self._channel = create_channel(
            self.target,
            # A read: safe to retry when chat is briefly unavailable.
            idempotent_methods=[f"{CHAT_SERVICE}/CheckMembership"],
            default_timeout=self.timeout_s,
        )
        self._stub = ChatStub(self._channel)

    async def stop(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)

    async def ready(self) -> bool:
        return self._channel is not None

    async def is_member(self, room_id: str) -> bool:
        """Whether the current caller is a member of `room_id` (chat's typed errors pass on)."""
        if self._stub is None:
            raise RuntimeError("chat channel not started")
        with rpc_errors():
            response = await self._stub.CheckMembership(
                chat_pb2.CheckMembershipRequest(room_ids=[room_id])
            )
        return room_id in response.member_of
