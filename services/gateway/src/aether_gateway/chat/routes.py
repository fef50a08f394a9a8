"""`/api/chat/*` REST and `WS /api/chat/connect`: each route parses, calls one ChatService RPC with
the caller's token, and shapes the answer; chat's errors keep their meaning (403, 404, 409...)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import WebSocketRoute

from aether.chat.v1 import chat_pb2
from aether_common.errors import ValidationFailed
from aether_gateway.chat import convert
from aether_gateway.chat.client import ChatClient
from aether_gateway.chat.schemas import (
    ID_PATTERN,
    CreateRoomIn,
    EditMessageIn,
    HistoryOut,
    InviteIn,
    MarkReadIn,
    MembersOut,
    MessageOut,
    ReadOut,
    RoomOut,
    RoomPresenceOut,
    RoomsOut,
    SendMessageIn,
    SendMessageOut,
)
from aether_gateway.chat.ws import ChatSession
from aether_gateway.deps import Caller, resources_of
from aether_gateway.ws.session import SocketApp

router = APIRouter(prefix="/api/chat", tags=["chat"])
# Starlette's WebSocketRoute with a plain ASGI app: no per-frame wrapper (ws.py).
router.routes.append(
    WebSocketRoute("/api/chat/connect", SocketApp(ChatSession), name="chat_connect")
)


async def get_chat(request: Request) -> ChatClient:
    return resources_of(request).chat.client()


Chat = Annotated[ChatClient, Depends(get_chat)]
RoomIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
SeqPath = Annotated[int, Path(ge=1, le=2**62)]
PageLimit = Annotated[int, Query(ge=1, le=200)]
PageToken = Annotated[str, Query(max_length=1024)]


# -- rooms ---------------------------------------------------------------------------------------
@router.post("/room", status_code=201, summary="Create a room; the caller owns it (CreateRoom)")
async def create_room(body: CreateRoomIn, caller: Caller, chat: Chat) -> RoomOut:
    request = chat_pb2.CreateRoomRequest(
        name=body.name,
        description=body.description,
        visibility=convert.visibility_value(body.visibility),
        member_ids=body.member_ids,
    )
    answer = await chat.call(chat.stub.CreateRoom, request, token=caller.raw)
    return RoomOut.model_validate(convert.room(answer.room))


@router.get("/rooms", summary="The caller's rooms, most recent activity first (ListMyRooms)")
async def list_my_rooms(
    caller: Caller, chat: Chat, limit: PageLimit = 50, page_token: PageToken = ""
) -> RoomsOut:
    request = chat_pb2.ListMyRoomsRequest(limit=limit, page_token=page_token)
    answer = await chat.call(chat.stub.ListMyRooms, request, token=caller.raw)
    return RoomsOut.model_validate(
        {
            "rooms": [convert.room_summary(s) for s in answer.rooms],
            "next_page_token": answer.next_page_token,
        }
    )


@router.get("/rooms/{room_id}", summary="One room (GetRoom; members only when private)")
async def get_room(room_id: RoomIdPath, caller: Caller, chat: Chat) -> RoomOut:
    answer = await chat.call(
        chat.stub.GetRoom, chat_pb2.GetRoomRequest(room_id=room_id), token=caller.raw
    )
    return RoomOut.model_validate(convert.room(answer.room))


@router.post("/rooms/{room_id}/join", summary="Join a public room, or one you are invited to")
async def join_room(room_id: RoomIdPath, caller: Caller, chat: Chat) -> RoomOut:
    answer = await chat.call(
        chat.stub.JoinRoom, chat_pb2.JoinRoomRequest(room_id=room_id), token=caller.raw
    )
    return RoomOut.model_validate(convert.room(answer.room))


@router.post(
    "/rooms/{room_id}/leave", status_code=204, response_class=Response, summary="Leave a room"
)
async def leave_room(room_id: RoomIdPath, caller: Caller, chat: Chat) -> Response:
    await chat.call(
        chat.stub.LeaveRoom, chat_pb2.LeaveRoomRequest(room_id=room_id), token=caller.raw
    )
    return Response(status_code=204)


@router.get("/rooms/{room_id}/members", summary="Members of a room (ListMembers)")
async def list_members(
    room_id: RoomIdPath,
    caller: Caller,
    chat: Chat,
    limit: PageLimit = 100,
    page_token: PageToken = "",
) -> MembersOut:
    request = chat_pb2.ListMembersRequest(room_id=room_id, limit=limit, page_token=page_token)
    answer = await chat.call(chat.stub.ListMembers, request, token=caller.raw)
    return MembersOut.model_validate(
        {
            "members": [convert.member(m) for m in answer.members],
            "next_page_token": answer.next_page_token,
        }
    )


@router.post(
    "/rooms/{room_id}/members",
    status_code=204,
    response_class=Response,
    summary="Invite (private) or add (public) a user (InviteMember)",
)
async def invite_member(
    room_id: RoomIdPath, body: InviteIn, caller: Caller, chat: Chat
) -> Response:
    request = chat_pb2.InviteMemberRequest(room_id=room_id, user_id=body.user_id)
    await chat.call(chat.stub.InviteMember, request, token=caller.raw)
    return Response(status_code=204)


@router.delete(
    "/rooms/{room_id}/members/{user_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a member; owner or room admin (RemoveMember)",
)
async def remove_member(
    room_id: RoomIdPath, user_id: UserIdPath, caller: Caller, chat: Chat
) -> Response:
    request = chat_pb2.RemoveMemberRequest(room_id=room_id, user_id=user_id)
    await chat.call(chat.stub.RemoveMember, request, token=caller.raw)
    return Response(status_code=204)


@router.get("/rooms/{room_id}/presence", summary="Who of the room is online (GetPresence)")
async def room_presence(room_id: RoomIdPath, caller: Caller, chat: Chat) -> RoomPresenceOut:
    answer = await chat.call(
        chat.stub.GetPresence, chat_pb2.GetPresenceRequest(room_id=room_id), token=caller.raw
    )
    return RoomPresenceOut.model_validate(
        {"members": [convert.presence(p) for p in answer.members]}
    )


@router.post("/rooms/{room_id}/read", summary="Read receipt: last read seq (MarkRead)")
async def mark_read(room_id: RoomIdPath, body: MarkReadIn, caller: Caller, chat: Chat) -> ReadOut:
    request = chat_pb2.MarkReadRequest(room_id=room_id, seq=body.seq)
    answer = await chat.call(chat.stub.MarkRead, request, token=caller.raw)
    return ReadOut(last_read_seq=answer.last_read_seq, unread_count=answer.unread_count)


# -- messages ------------------------------------------------------------------------------------
@router.post(
    "/message",
    status_code=201,
    summary="Send a message; idempotent by client_msg_id (SendMessage)",
    responses={200: {"model": SendMessageOut, "description": "a retry: the stored message"}},
)
async def send_message(body: SendMessageIn, caller: Caller, chat: Chat) -> JSONResponse:
    request = chat_pb2.SendMessageRequest(
        room_id=body.room_id,
        client_msg_id=body.client_msg_id or uuid.uuid4().hex,
        content=body.content,
        mentions=body.mentions,
        reply_to_seq=body.reply_to_seq,
    )
    answer = await chat.call(chat.stub.SendMessage, request, token=caller.raw)
    out = SendMessageOut.model_validate(
        {"message": convert.message(answer.message), "created": answer.created}
    )
    return JSONResponse(out.model_dump(), status_code=201 if answer.created else 200)


@router.get("/history", summary="Messages by seq cursor, ascending (GetHistory)")
async def history(
    caller: Caller,
    chat: Chat,
    room_id: Annotated[str, Query(min_length=1, max_length=128, pattern=ID_PATTERN)],
    after_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HistoryOut:
    if after_seq is not None and before_seq is not None:
        raise ValidationFailed(
            "send after_seq (newer messages) or before_seq (older ones), not both",
            field_errors={"after_seq": "exclusive with before_seq"},
        )
    request = chat_pb2.GetHistoryRequest(
        room_id=room_id, after_seq=after_seq or 0, before_seq=before_seq or 0, limit=limit
    )
    answer = await chat.call(chat.stub.GetHistory, request, token=caller.raw)
    return HistoryOut.model_validate(
        {
            "messages": [convert.message(m) for m in answer.messages],
            "has_more": answer.has_more,
            "last_seq": answer.last_seq,
        }
    )


@router.patch("/rooms/{room_id}/messages/{seq}", summary="Edit your message (EditMessage)")
async def edit_message(
    room_id: RoomIdPath, seq: SeqPath, body: EditMessageIn, caller: Caller, chat: Chat
) -> MessageOut:
    request = chat_pb2.EditMessageRequest(room_id=room_id, seq=seq, content=body.content)
    answer = await chat.call(chat.stub.EditMessage, request, token=caller.raw)
    return MessageOut.model_validate(convert.message(answer.message))


@router.delete(
    "/rooms/{room_id}/messages/{seq}",
    status_code=204,
    response_class=Response,
    summary="Delete a message: your own, or any as owner/admin (DeleteMessage)",
)
async def delete_message(room_id: RoomIdPath, seq: SeqPath, caller: Caller, chat: Chat) -> Response:
    request = chat_pb2.DeleteMessageRequest(room_id=room_id, seq=seq)
    await chat.call(chat.stub.DeleteMessage, request, token=caller.raw)
    return Response(status_code=204)
