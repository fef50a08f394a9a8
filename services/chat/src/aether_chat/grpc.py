"""The ChatService gRPC servicer: identify the caller, read the request into the service's plain
arguments and records, open the transaction, call the service, build the answer (schemas.py).
Every RPC is "caller" (chat.proto): no verified token, no call; ArchiveExpiredMessages is the
operators' (callers.require_operator). A service in CHAT_DELEGATING_SERVICES (the worker) may act
for a user (aether_common.delegation): it is then that user, with a user's ordinary rights.

A datastore that is away answers UNAVAILABLE with Retry-After, never INTERNAL: the shared server
interceptor maps what escapes (aether_common.outages), transactions included.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_chat import schemas, validation
from aether_chat.archive import MessageArchive
from aether_chat.batching import SendBatcher
from aether_chat.callers import require_caller, require_operator
from aether_chat.db import Database
from aether_chat.metrics import MESSAGES_SENT
from aether_chat.service import ChatService, HistoryQuery, NewMessage, NewRoom
from aether_common.data_export import encode
from aether_common.grpc.interceptors import Context
from aether_common.logging import get_logger

log = get_logger(__name__)

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name


def _room_key(raw_room_id: str) -> str:
    """The in-process serialisation key of a room's writes (validated again by the service)."""
    return "room:" + validation.room_id(raw_room_id)


def register(servicer: ChatServicer, server: Any) -> None:
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        service: ChatService,
        database: Database,
        sends: SendBatcher,
        archive: MessageArchive,
    ) -> None:
        self._service = service
        self._db = database
        self._sends = sends
        self._archive = archive

    # -- rooms ---------------------------------------------------------------------------------
    async def CreateRoom(
        self, request: chat_pb2.CreateRoomRequest, context: Context
    ) -> chat_pb2.CreateRoomResponse:
        caller = require_caller()
        new = NewRoom(
            name=request.name,
            description=request.description,
            visibility=schemas.visibility_from_pb(request.visibility),
            member_ids=tuple(request.member_ids),
        )
        room = await self._db.transaction(lambda uow: self._service.create_room(uow, caller, new))
        return chat_pb2.CreateRoomResponse(room=schemas.room_pb(room))

    async def GetRoom(
        self, request: chat_pb2.GetRoomRequest, context: Context
    ) -> chat_pb2.GetRoomResponse:
        caller = require_caller()
        room = await self._service.get_room(caller, request.room_id)
        return chat_pb2.GetRoomResponse(room=schemas.room_pb(room))

    async def ListMyRooms(
        self, request: chat_pb2.ListMyRoomsRequest, context: Context
    ) -> chat_pb2.ListMyRoomsResponse:
        caller = require_caller()
        page = await self._service.list_my_rooms(
            caller, limit=request.limit, page_token=request.page_token
        )
        return schemas.rooms_page_pb(page.listing, page.start, page.stop, page.next_page_token)

    async def JoinRoom(
        self, request: chat_pb2.JoinRoomRequest, context: Context
    ) -> chat_pb2.JoinRoomResponse:
        caller = require_caller()
        room = await self._db.transaction(
            lambda uow: self._service.join_room(uow, caller, request.room_id),
            key=_room_key(request.room_id),
        )
        return chat_pb2.JoinRoomResponse(room=schemas.room_pb(room))

    async def LeaveRoom(
        self, request: chat_pb2.LeaveRoomRequest, context: Context
    ) -> chat_pb2.LeaveRoomResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.leave_room(uow, caller, request.room_id),
            key=_room_key(request.room_id),
        )
        return chat_pb2.LeaveRoomResponse()

    async def InviteMember(
        self, request: chat_pb2.InviteMemberRequest, context: Context
    ) -> chat_pb2.InviteMemberResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.invite_member(uow, caller, request.room_id, request.user_id),
            key=_room_key(request.room_id),
        )
        return chat_pb2.InviteMemberResponse()

    async def RemoveMember(
        self, request: chat_pb2.RemoveMemberRequest, context: Context
    ) -> chat_pb2.RemoveMemberResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.remove_member(uow, caller, request.room_id, request.user_id),
            key=_room_key(request.room_id),
        )
        return chat_pb2.RemoveMemberResponse()

    async def ListMembers(
        self, request: chat_pb2.ListMembersRequest, context: Context
    ) -> chat_pb2.ListMembersResponse:
        caller = require_caller()
        page = await self._service.list_members(
            caller, request.room_id, limit=request.limit, page_token=request.page_token
        )
        return chat_pb2.ListMembersResponse(
            members=[schemas.member_pb(member) for member in page.members],
            next_page_token=page.next_page_token,
        )

    async def CheckMembership(
        self, request: chat_pb2.CheckMembershipRequest, context: Context
    ) -> chat_pb2.CheckMembershipResponse:
        caller = require_caller()
        member_of = await self._service.check_membership(caller, request.room_ids)
        return chat_pb2.CheckMembershipResponse(member_of=member_of)

    # -- messages ------------------------------------------------------------------------------
    async def SendMessage(
        self, request: chat_pb2.SendMessageRequest, context: Context
    ) -> chat_pb2.SendMessageResponse:
        caller = require_caller()
        new = NewMessage(
            room_id=request.room_id,
            client_msg_id=request.client_msg_id,
            content=request.content,
            mentions=tuple(request.mentions),
            reply_to_seq=request.reply_to_seq,
        )
        draft = self._service.draft_message(caller, new)
        # Sends to one room share its next transaction (batching.py).
        sent = await self._sends.send(draft)
        MESSAGES_SENT.labels("created" if sent.created else "duplicate").inc()
        return chat_pb2.SendMessageResponse(
            message=schemas.message_pb(sent.message), created=sent.created
        )

    async def EditMessage(
        self, request: chat_pb2.EditMessageRequest, context: Context
    ) -> chat_pb2.EditMessageResponse:
        caller = require_caller()
        message = await self._db.transaction(
            lambda uow: self._service.edit_message(
                uow, caller, request.room_id, request.seq, request.content
            ),
            key=_room_key(request.room_id),
        )
        return chat_pb2.EditMessageResponse(message=schemas.message_pb(message))

    async def DeleteMessage(
        self, request: chat_pb2.DeleteMessageRequest, context: Context
    ) -> chat_pb2.DeleteMessageResponse:
        caller = require_caller()
        await self._db.transaction(
            lambda uow: self._service.delete_message(uow, caller, request.room_id, request.seq),
            key=_room_key(request.room_id),
        )
        return chat_pb2.DeleteMessageResponse()

    async def GetHistory(
        self, request: chat_pb2.GetHistoryRequest, context: Context
    ) -> chat_pb2.GetHistoryResponse:
        caller = require_caller()
        query = HistoryQuery(
            room_id=request.room_id,
            after_seq=request.after_seq,
            before_seq=request.before_seq,
            limit=request.limit,
        )
        page = await self._service.history(caller, query)
        if isinstance(page, bytes):  # the cache's encoding of this very answer
            return chat_pb2.GetHistoryResponse.FromString(page)
        return schemas.history_pb(page.messages, has_more=page.has_more, last_seq=page.last_seq)

    # -- receipts, typing, presence ------------------------------------------------------------
    async def MarkRead(
        self, request: chat_pb2.MarkReadRequest, context: Context
    ) -> chat_pb2.MarkReadResponse:
        caller = require_caller()
        state = await self._service.mark_read(caller, request.room_id, request.seq)
        return chat_pb2.MarkReadResponse(
            last_read_seq=state.last_read_seq, unread_count=state.unread_count
        )

    async def SetTyping(
        self, request: chat_pb2.SetTypingRequest, context: Context
    ) -> chat_pb2.SetTypingResponse:
        caller = require_caller()
        await self._service.set_typing(caller, request.room_id, request.typing)
        return chat_pb2.SetTypingResponse()

    async def UpdatePresence(
        self, request: chat_pb2.UpdatePresenceRequest, context: Context
    ) -> chat_pb2.UpdatePresenceResponse:
        caller = require_caller()
        await self._service.update_presence(caller, request.online)
        return chat_pb2.UpdatePresenceResponse()

    async def GetPresence(
        self, request: chat_pb2.GetPresenceRequest, context: Context
    ) -> chat_pb2.GetPresenceResponse:
        caller = require_caller()
        states = await self._service.get_presence(caller, request.room_id)
        return chat_pb2.GetPresenceResponse(
            members=[schemas.presence_pb(s.user_id, s.online, s.last_seen_ms) for s in states]
        )

    # -- the GDPR export -------------------------------------------------------------------------
    async def ExportMyData(
        self, request: chat_pb2.ExportMyDataRequest, context: Context
    ) -> chat_pb2.ExportMyDataResponse:
        # Reads only, outside a transaction like chat's other reads (a long MongoDB transaction
        # would hold its snapshot for the whole export); messages sent meanwhile may be in it.
        caller = require_caller()
        document = await self._service.export_my_data(caller)
        return chat_pb2.ExportMyDataResponse(
            json=encode(document, max_bytes=self._service.settings.export_max_bytes)
        )

    # -- retention -----------------------------------------------------------------------------
    async def ArchiveExpiredMessages(
        self, request: chat_pb2.ArchiveExpiredMessagesRequest, context: Context
    ) -> chat_pb2.ArchiveExpiredMessagesResponse:
        operator = require_operator()
        before = request.before.ToDatetime(tzinfo=UTC) if request.HasField("before") else None
        run = await self._archive.run(before)
        log.info("archive run", by=operator, archived=run.archived, deleted=run.deleted)
        answer = chat_pb2.ArchiveExpiredMessagesResponse(
            archived=run.archived,
            deleted=run.deleted,
            rooms=len(run.rooms),
            objects=run.objects,
            bucket=self._archive.bucket,
        )
        answer.cutoff.FromDatetime(run.cutoff)
        return answer
