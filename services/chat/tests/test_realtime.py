"""What gateways see on the Redis fan-out channels (docs/chat.md), read receipts and presence."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import Any

import orjson
import pytest

from aether.chat.v1 import chat_pb2
from aether_chat.metrics import FANOUT_FAILURES
from aether_common.errors import AetherError
from aether_common.grpc import checked
from aether_devstack.servers import free_port, tcp_open

MESSAGE_KEYS = {
    "message_id",
    "room_id",
    "seq",
    "sender_id",
    "client_msg_id",
    "content",
    "mentions",
    "reply_to_seq",
    "created_at",
    "edited_at",
    "deleted",
}


async def test_message_edit_and_delete_frames(chat: Any) -> None:
    owner, other = chat.user("owner"), chat.user("other")
    room = await chat.create_room(owner, members=[other])
    frames = await chat.subscribe(room.room_id)
    try:
        sent = await chat.send(other, room.room_id, "gm", mentions=[owner], client_msg_id="c-1")
        frame = await frames.next()
        assert set(frame) == {"type", "room_id", "seq", "message"}
        assert frame["type"] == "message"
        assert frame["room_id"] == room.room_id
        assert frame["seq"] == 1
        message = frame["message"]
        assert set(message) == MESSAGE_KEYS
        assert message == {
            "message_id": sent.message.message_id,
            "room_id": room.room_id,
            "seq": 1,
            "sender_id": other,
            "client_msg_id": "c-1",
            "content": "gm",
            "mentions": [owner],
            "reply_to_seq": 0,
            "created_at": message["created_at"],
            "edited_at": None,
            "deleted": False,
        }
        assert message["created_at"].endswith("Z")
        assert "T" in message["created_at"]
        assert frames.raw[-1] == orjson.dumps(frame)  # one compact JSON object

        # A retry publishes nothing new.
        await chat.send(other, room.room_id, "gm", client_msg_id="c-1")
        await frames.none()

        await chat.stub.EditMessage(
            chat_pb2.EditMessageRequest(room_id=room.room_id, seq=1, content="gm!"),
            metadata=chat.auth(other),
        )
        edit = await frames.next()
        assert edit["type"] == "edit"
        assert edit["seq"] == 1
        assert edit["message"]["content"] == "gm!"
        assert edit["message"]["edited_at"]

        await chat.stub.DeleteMessage(
            chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=1), metadata=chat.auth(owner)
        )
        assert await frames.next() == {
            "type": "delete",
            "room_id": room.room_id,
            "seq": 1,
            "message_id": sent.message.message_id,
            "deleted_by": owner,
        }
    finally:
        await frames.close()


async def test_frames_of_concurrent_sends_leave_in_seq_order(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    frames = await chat.subscribe(room.room_id)
    try:
        await asyncio.gather(*(chat.send(owner, room.room_id, f"m{i}") for i in range(20)))
        seqs = [(await frames.next())["seq"] for _ in range(20)]
    finally:
        await frames.close()

    assert seqs == list(range(1, 21))


async def test_member_frames_on_join_leave_and_remove(chat: Any) -> None:
    owner, a, b = chat.user("owner"), chat.user("a"), chat.user("b")
    room = await chat.create_room(owner, members=[b])
    frames = await chat.subscribe(room.room_id)
    try:
        await chat.stub.JoinRoom(
            chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(a)
        )
        assert await frames.next() == {
            "type": "member",
            "room_id": room.room_id,
            "user_id": a,
            "event": "joined",
        }
        await chat.stub.LeaveRoom(
            chat_pb2.LeaveRoomRequest(room_id=room.room_id), metadata=chat.auth(a)
        )
        assert (await frames.next())["event"] == "left"
        await chat.stub.RemoveMember(
            chat_pb2.RemoveMemberRequest(room_id=room.room_id, user_id=b),
            metadata=chat.auth(owner),
        )
        assert await frames.next() == {
            "type": "member",
            "room_id": room.room_id,
            "user_id": b,
            "event": "removed",
        }
    finally:
        await frames.close()


async def test_typing_is_fanned_out_and_not_stored(chat: Any, kit: Any) -> None:
    owner, other = chat.user(), chat.user()
    room = await chat.create_room(owner, members=[other])
    frames = await chat.subscribe(room.room_id)
    try:
        for typing in (True, False):
            await chat.stub.SetTyping(
                chat_pb2.SetTypingRequest(room_id=room.room_id, typing=typing),
                metadata=chat.auth(other),
            )
            assert await frames.next() == {
                "type": "typing",
                "room_id": room.room_id,
                "user_id": other,
                "typing": typing,
            }
    finally:
        await frames.close()
    assert await chat.db.messages.count_documents({}) == 0
    error = await kit.failure(
        chat.stub.SetTyping(
            chat_pb2.SetTypingRequest(room_id=room.room_id, typing=True),
            metadata=chat.auth(chat.user("stranger")),
        )
    )
    assert error.grpc_code.name == "PERMISSION_DENIED"


async def test_read_receipts_never_move_backwards(chat: Any, kit: Any) -> None:
    owner, reader = chat.user("owner"), chat.user("reader")
    room = await chat.create_room(owner, members=[reader])
    for i in range(5):
        await chat.send(owner, room.room_id, f"m{i}")
    frames = await chat.subscribe(room.room_id)
    try:
        read = await chat.stub.MarkRead(
            chat_pb2.MarkReadRequest(room_id=room.room_id, seq=3), metadata=chat.auth(reader)
        )
        assert (read.last_read_seq, read.unread_count) == (3, 2)
        assert await frames.next() == {
            "type": "read",
            "room_id": room.room_id,
            "user_id": reader,
            "seq": 3,
        }
        back = await chat.stub.MarkRead(
            chat_pb2.MarkReadRequest(room_id=room.room_id, seq=1), metadata=chat.auth(reader)
        )
        assert (back.last_read_seq, back.unread_count) == (3, 2)
        await frames.none()  # nothing moved, nothing published
    finally:
        await frames.close()

    members = await chat.stub.ListMembers(
        chat_pb2.ListMembersRequest(room_id=room.room_id), metadata=chat.auth(owner)
    )
    reads = {m.user_id: m.last_read_seq for m in members.members}
    assert reads == {owner: 5, reader: 3}  # sending marks your own messages read
    error = await kit.failure(
        chat.stub.MarkRead(
            chat_pb2.MarkReadRequest(room_id=room.room_id, seq=6), metadata=chat.auth(reader)
        )
    )
    assert error.grpc_code.name == "INVALID_ARGUMENT"
    assert "past" in error.detail
    done = await chat.stub.MarkRead(
        chat_pb2.MarkReadRequest(room_id=room.room_id, seq=5), metadata=chat.auth(reader)
    )
    assert (done.last_read_seq, done.unread_count) == (5, 0)


async def test_presence_heartbeats_frames_and_ttl(chat: Any) -> None:
    me, friend = chat.user("me"), chat.user("friend")
    room_a = await chat.create_room(friend, members=[me])
    room_b = await chat.create_room(me, members=[friend])
    frames = await chat.subscribe(room_a.room_id, room_b.room_id)
    try:
        await chat.stub.UpdatePresence(
            chat_pb2.UpdatePresenceRequest(online=True), metadata=chat.auth(me)
        )
        got = [await frames.next(), await frames.next()]
        assert {f["room_id"] for f in got} == {room_a.room_id, room_b.room_id}
        assert all(f == {**f, "type": "presence", "user_id": me, "online": True} for f in got)

        # A heartbeat that changes nothing publishes nothing.
        await chat.stub.UpdatePresence(
            chat_pb2.UpdatePresenceRequest(online=True), metadata=chat.auth(me)
        )
        await frames.none()

        presence = await chat.stub.GetPresence(
            chat_pb2.GetPresenceRequest(room_id=room_a.room_id), metadata=chat.auth(friend)
        )
        states = {p.user_id: p for p in presence.members}
        assert states[me].online
        assert states[me].last_seen.seconds > 0
        assert not states[friend].online
        assert not states[friend].HasField("last_seen")
        ttl = await chat.redis.ttl(f"{chat.settings.redis_prefix}presence:{me}")
        assert 0 < ttl <= chat.settings.presence_ttl_s

        await chat.stub.UpdatePresence(
            chat_pb2.UpdatePresenceRequest(online=False), metadata=chat.auth(me)
        )
        offline = [await frames.next(), await frames.next()]
        assert all(f["online"] is False and f["user_id"] == me for f in offline)
    finally:
        await frames.close()
    presence = await chat.stub.GetPresence(
        chat_pb2.GetPresenceRequest(room_id=room_a.room_id), metadata=chat.auth(friend)
    )
    state = {p.user_id: p for p in presence.members}[me]
    assert not state.online
    assert state.last_seen.seconds > 0


async def test_a_redis_outage_never_fails_a_send(start_chat: Any, tmp_path: Any) -> None:
    """A private Redis server that dies mid-test: the send commits, the frame is lost (counted),
    reads fall back to MongoDB; presence (Redis only) is refused as UNAVAILABLE, not INTERNAL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not tcp_open(port):
            assert time.monotonic() < deadline, "redis-server did not start"
            await asyncio.sleep(0.02)
        chat = await start_chat(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.2)
        owner = chat.user()
        room = await chat.create_room(owner)
        await chat.send(owner, room.room_id, "before")
        server.terminate()
        await asyncio.wait_for(server.wait(), 5)
        failures = FANOUT_FAILURES._value.get()

        sent = await chat.send(owner, room.room_id, "committed anyway")

        assert sent.created
        assert sent.message.seq == 2
        assert FANOUT_FAILURES._value.get() == failures + 1
        page = await chat.history(owner, room.room_id)  # the cache is away: MongoDB answers
        assert [m.content for m in page.messages] == ["before", "committed anyway"]
        listed = await chat.stub.ListMyRooms(
            chat_pb2.ListMyRoomsRequest(), metadata=chat.auth(owner)
        )
        assert listed.rooms[0].last_message.content == "committed anyway"
        # Typing frames are best effort like every frame; presence lives in Redis only.
        await chat.stub.SetTyping(
            chat_pb2.SetTypingRequest(room_id=room.room_id, typing=True),
            metadata=chat.auth(owner),
        )
        error = await failure(
            chat.stub.UpdatePresence(
                chat_pb2.UpdatePresenceRequest(online=True), metadata=chat.auth(owner)
            )
        )
        assert error is not None
        assert error.grpc_code.name == "UNAVAILABLE", error
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def failure(call: Any) -> Any:
    """None when the call succeeds, else its typed error."""
    try:
        await checked(call)
    except AetherError as exc:
        return exc
    return None


async def test_receipts_and_sends_of_one_member_race_safely(chat: Any) -> None:
    """MarkRead writes the member document that a send's transaction also writes."""
    owner, me = chat.user("owner"), chat.user("me")
    room = await chat.create_room(owner, members=[me])
    for i in range(5):
        await chat.send(owner, room.room_id, f"m{i}")

    results = await asyncio.gather(
        *(chat.send(me, room.room_id, f"mine {i}") for i in range(15)),
        *(
            chat.stub.MarkRead(
                chat_pb2.MarkReadRequest(room_id=room.room_id, seq=1 + i % 5),
                metadata=chat.auth(me),
            )
            for i in range(15)
        ),
    )

    assert sorted(r.message.seq for r in results[:15]) == list(range(6, 21))
    members = await chat.stub.ListMembers(
        chat_pb2.ListMembersRequest(room_id=room.room_id), metadata=chat.auth(me)
    )
    assert {m.user_id: m.last_read_seq for m in members.members}[me] == 20
