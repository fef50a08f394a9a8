"""The ChatService gRPC servicer: identify the caller, open the transaction, call the service,
answer. Every RPC is "caller" (chat.proto): no verified token, no call.

A datastore that is away answers UNAVAILABLE with Retry-After, never INTERNAL: the shared server
interceptor maps what escapes (aether_common.outages), transactions included.
"""

from __future__ import annotations

from typing import Any

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_chat import schemas, validation
from aether_chat.batching import SendBatcher
from aether_chat.callers import require_caller
from aether_chat.db import Database
from aether_chat.metrics import MESSAGES_SENT
from aether_chat.service import ChatService
from aether_common.grpc.interceptors import Context

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name


def _room_key(raw_room_id: str) -> str:
    """The in-process serialisation key of a room's writes (validated again by the service)."""
    return "room:" + validation.room_id(raw_room_id)


def register(servicer: ChatServicer, server: Any) -> None:
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, service: ChatService, database: Database, sends: SendBatcher) -> None:
        self._service = service
        self._db = database
        self._sends = sends

    # -- rooms ---------------------------------------------------------------------------------
    async def CreateRoom(
        self, request: chat_pb2.CreateRoomRequest, context: Context
    ) -> chat_pb2.CreateRoomResponse:
        caller = require_caller()
        room = await self._db.transaction(
            lambda uow: self._service.create_room(uow, caller, request)
        )
        return chat_pb2.CreateRoomResponse(room=schemas.room_pb(room))

    async def GetRoom(
        self, request: chat_pb2.GetRoomRequest, context: Context
    ) -> chat_pb2.GetRoomResponse:
        caller = require_caller()
        room = await self._service.get_room(caller, request)
        return chat_pb2.GetRoomResponse(room=schemas.room_pb(room))

    async def ListMyRooms(
        self, request: chat_pb2.ListMyRoomsRequest, context: Context
    ) -> chat_pb2.ListMyRoomsResponse:
        caller = require_caller()
        return await self._service.list_my_rooms(caller, request)

    async def JoinRoom(
        self, request: chat_pb2.JoinRoomRequest, context: Context
    ) -> chat_pb2.JoinRoomResponse:
        caller = require_caller()
        room = await self._db.transaction(
            lambda uow: self._service.join_room(uow, caller, request),
            key=_room_key(request.room_id),
        )
        return chat_pb2.JoinRoomResponse(room=schemas.room_pb(room))

    async def LeaveRoom(
        self, request: chat_pb2.LeaveRoomRequest, context: Context
    ) -> chat_pb2.LeaveRoomResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.leave_room(uow, caller, request),
            key=_room_key(request.room_id),
        )
        return chat_pb2.LeaveRoomResponse()

    async def InviteMember(
        self, request: chat_pb2.InviteMemberRequest, context: Context
    ) -> chat_pb2.InviteMemberResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.invite_member(uow, caller, request),
            key=_room_key(request.room_id),
        )
        return chat_pb2.InviteMemberResponse()

    async def RemoveMember(
        self, request: chat_pb2.RemoveMemberRequest, context: Context
    ) -> chat_pb2.RemoveMemberResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.remove_member(uow, caller, request),
            key=_room_key(request.room_id),
        )
        return chat_pb2.RemoveMemberResponse()

    async def ListMembers(
        self, request: chat_pb2.ListMembersRequest, context: Context
    ) -> chat_pb2.ListMembersResponse:
        caller = require_caller()
        page = await self._service.list_members(caller, request)
        return chat_pb2.ListMembersResponse(
            members=[schemas.member_pb(member) for member in page.members],
            next_page_token=page.next_page_token,
        )

    async def CheckMembership(
        self, request: chat_pb2.CheckMembershipRequest, context: Context
    ) -> chat_pb2.CheckMembershipResponse:
        caller = require_caller()
        member_of = await self._service.check_membership(caller, request)
        return chat_pb2.CheckMembershipResponse(member_of=member_of)

    # -- messages ------------------------------------------------------------------------------
    async def SendMessage(
        self, request: chat_pb2.SendMessageRequest, context: Context
    ) -> chat_pb2.SendMessageResponse:
        caller = require_caller()
        draft = self._service.draft_message(caller, request)
        # Sends to one room share its next transaction (batching.py).
        sent = await self._sends.send(draft)
        MESSAGES_SENT.labels("created" if sent.created else "duplicate").inc()
        return chat_pb2.SendMessageResponse(message=sent.pb, created=sent.created)

    async def EditMessage(
        self, request: chat_pb2.EditMessageRequest, context: Context
    ) -> chat_pb2.EditMessageResponse:
        caller = require_caller()
        message = await self._db.transaction(
            lambda uow: self._service.edit_message(uow, caller, request),
            key=_room_key(request.room_id),
        )
        return chat_pb2.EditMessageResponse(message=message)

    async def DeleteMessage(
        self, request: chat_pb2.DeleteMessageRequest, context: Context
    ) -> chat_pb2.DeleteMessageResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.delete_message(uow, caller, request),
            key=_room_key(request.room_id),
        )
        return chat_pb2.DeleteMessageResponse()

    async def GetHistory(
        self, request: chat_pb2.GetHistoryRequest, context: Context
    ) -> chat_pb2.GetHistoryResponse:
        caller = require_caller()
        return await self._service.history(caller, request)

    # -- receipts, typing, presence ------------------------------------------------------------
    async def MarkRead(
        self, request: chat_pb2.MarkReadRequest, context: Context
    ) -> chat_pb2.MarkReadResponse:
        caller = require_caller()
        state = await self._service.mark_read(caller, request)
        return chat_pb2.MarkReadResponse(
            last_read_seq=state.last_read_seq, unread_count=state.unread_count
        )

    async def SetTyping(
        self, request: chat_pb2.SetTypingRequest, context: Context
    ) -> chat_pb2.SetTypingResponse:
        caller = require_caller()
        await self._service.set_typing(caller, request)
        return chat_pb2.SetTypingResponse()

    async def UpdatePresence(
        self, request: chat_pb2.UpdatePresenceRequest, context: Context
    ) -> chat_pb2.UpdatePresenceResponse:
        caller = require_caller()
        await self._service.update_presence(caller, request)
        return chat_pb2.UpdatePresenceResponse()

    async def GetPresence(
        self, request: chat_pb2.GetPresenceRequest, context: Context
    ) -> chat_pb2.GetPresenceResponse:
        caller = require_caller()
        states = await self._service.get_presence(caller, request)
        members = []
        for state in states:
            presence = chat_pb2.Presence(user_id=state.user_id, online=state.online)
            if state.last_seen_ms is not None:
                presence.last_seen.FromMilliseconds(state.last_seen_ms)
            members.append(presence)
        return chat_pb2.GetPresenceResponse(members=members)
