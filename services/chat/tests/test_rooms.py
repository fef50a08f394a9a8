"""Rooms and membership: create, join, leave, invite, remove, members, my rooms."""

from __future__ import annotations

import uuid
from typing import Any

from aether.chat.v1 import chat_pb2
from aether_common.errors import Forbidden, NotFound


async def test_create_a_public_room_with_members(chat: Any) -> None:
    owner, a, b = chat.user("owner"), chat.user("a"), chat.user("b")

    response = await chat.stub.CreateRoom(
        chat_pb2.CreateRoomRequest(
            name="  Options desk ",
            description="calls and puts",
            visibility=chat.PUBLIC,
            member_ids=[a, b, a, owner],  # duplicates and the caller are ignored
        ),
        metadata=chat.auth(owner),
    )

    room = response.room
    uuid.UUID(room.room_id)
    assert room.name == "Options desk"
    assert room.description == "calls and puts"
    assert room.visibility == chat.PUBLIC
    assert room.owner_id == owner
    assert room.member_count == 3
    assert room.last_seq == 0
    assert room.created_at.seconds > 0
    members = await chat.stub.ListMembers(
        chat_pb2.ListMembersRequest(room_id=room.room_id), metadata=chat.auth(a)
    )
    roles = {m.user_id: m.role for m in members.members}
    assert roles == {
        owner: chat_pb2.MEMBER_ROLE_OWNER,
        a: chat_pb2.MEMBER_ROLE_MEMBER,
        b: chat_pb2.MEMBER_ROLE_MEMBER,
    }


async def test_anyone_joins_a_public_room_and_leaves_it(chat: Any, kit: Any) -> None:
    owner, visitor = chat.user(), chat.user("visitor")
    room = await chat.create_room(owner)
    await chat.send(owner, room.room_id, "before the visitor")

    joined = await chat.stub.JoinRoom(
        chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    again = await chat.stub.JoinRoom(  # joining twice changes nothing
        chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    assert joined.room.member_count == 2
    assert again.room.member_count == 2
    sent = await chat.send(visitor, room.room_id, "hi all")
    assert sent.message.seq == 2

    await chat.stub.LeaveRoom(
        chat_pb2.LeaveRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    await chat.stub.LeaveRoom(  # leaving twice too
        chat_pb2.LeaveRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    got = await chat.stub.GetRoom(
        chat_pb2.GetRoomRequest(room_id=room.room_id), metadata=chat.auth(visitor)
    )
    assert got.room.member_count == 1  # a public room is visible to anyone
    error = await kit.failure(chat.send(visitor, room.room_id, "still here?"))
    assert isinstance(error, Forbidden)


async def test_a_private_room_needs_an_invitation(chat: Any, kit: Any) -> None:
    owner, invited, stranger = chat.user("owner"), chat.user("invited"), chat.user("stranger")
    room = await chat.create_room(owner, visibility=chat.PRIVATE, members=[invited])
    assert room.member_count == 1  # invited at creation, a member once they join

    for call in (
        chat.stub.JoinRoom(
            chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(stranger)
        ),
        chat.stub.GetRoom(
            chat_pb2.GetRoomRequest(room_id=room.room_id), metadata=chat.auth(stranger)
        ),
    ):
        error = await kit.failure(call)
        assert isinstance(error, Forbidden)
        assert "private" in error.detail

    joined = await chat.stub.JoinRoom(
        chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(invited)
    )
    assert joined.room.member_count == 2

    # A member who is not an admin cannot invite to a private room; the owner can.
    error = await kit.failure(
        chat.stub.InviteMember(
            chat_pb2.InviteMemberRequest(room_id=room.room_id, user_id=stranger),
            metadata=chat.auth(invited),
        )
    )
    assert isinstance(error, Forbidden)
    await chat.stub.InviteMember(
        chat_pb2.InviteMemberRequest(room_id=room.room_id, user_id=stranger),
        metadata=chat.auth(owner),
    )
    await chat.stub.JoinRoom(
        chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(stranger)
    )
    membership = await chat.stub.CheckMembership(
        chat_pb2.CheckMembershipRequest(room_ids=[room.room_id]), metadata=chat.auth(stranger)
    )
    assert list(membership.member_of) == [room.room_id]
    # The invitation was spent: after leaving, joining again is refused.
    await chat.stub.LeaveRoom(
        chat_pb2.LeaveRoomRequest(room_id=room.room_id), metadata=chat.auth(stranger)
    )
    error = await kit.failure(
        chat.stub.JoinRoom(
            chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(stranger)
        )
    )
    assert isinstance(error, Forbidden)


async def test_any_member_adds_people_to_a_public_room(chat: Any, kit: Any) -> None:
    owner, member, friend = chat.user(), chat.user(), chat.user("friend")
    room = await chat.create_room(owner, members=[member])

    await chat.stub.InviteMember(
        chat_pb2.InviteMemberRequest(room_id=room.room_id, user_id=friend),
        metadata=chat.auth(member),
    )

    assert (await chat.send(friend, room.room_id, "thanks")).message.seq == 1
    error = await kit.failure(
        chat.stub.InviteMember(
            chat_pb2.InviteMemberRequest(room_id=room.room_id, user_id=chat.user()),
            metadata=chat.auth(chat.user("outsider")),
        )
    )
    assert isinstance(error, Forbidden)


async def test_the_owner_and_admins_remove_members(chat: Any, kit: Any) -> None:
    owner, admin, m1, m2 = chat.user("owner"), chat.user("admin"), chat.user(), chat.user()
    room = await chat.create_room(owner, members=[admin, m1, m2])
    await chat.db.members.update_one(
        {"room_id": room.room_id, "user_id": admin}, {"$set": {"role": "admin"}}
    )

    # A plain member may not remove anyone.
    error = await kit.failure(
        chat.stub.RemoveMember(
            chat_pb2.RemoveMemberRequest(room_id=room.room_id, user_id=m2),
            metadata=chat.auth(m1),
        )
    )
    assert isinstance(error, Forbidden)

    await chat.stub.RemoveMember(
        chat_pb2.RemoveMemberRequest(room_id=room.room_id, user_id=m1),
        metadata=chat.auth(admin),
    )
    error = await kit.failure(chat.send(m1, room.room_id, "let me back"))
    assert isinstance(error, Forbidden)
    # An admin cannot remove the owner; the owner removes the admin.
    error = await kit.failure(
        chat.stub.RemoveMember(
            chat_pb2.RemoveMemberRequest(room_id=room.room_id, user_id=owner),
            metadata=chat.auth(admin),
        )
    )
    assert isinstance(error, Forbidden)
    await chat.stub.RemoveMember(
        chat_pb2.RemoveMemberRequest(room_id=room.room_id, user_id=admin),
        metadata=chat.auth(owner),
    )
    error = await kit.failure(
        chat.stub.RemoveMember(
            chat_pb2.RemoveMemberRequest(room_id=room.room_id, user_id=m1),
            metadata=chat.auth(owner),
        )
    )
    assert isinstance(error, NotFound)
    got = await chat.stub.GetRoom(
        chat_pb2.GetRoomRequest(room_id=room.room_id), metadata=chat.auth(owner)
    )
    assert got.room.member_count == 2


async def test_ownership_passes_on_when_the_owner_leaves(chat: Any) -> None:
    owner, first, second = chat.user("owner"), chat.user("first"), chat.user("second")
    room = await chat.create_room(owner, members=[first])
    await chat.stub.JoinRoom(
        chat_pb2.JoinRoomRequest(room_id=room.room_id), metadata=chat.auth(second)
    )

    await chat.stub.LeaveRoom(
        chat_pb2.LeaveRoomRequest(room_id=room.room_id), metadata=chat.auth(owner)
    )

    got = await chat.stub.GetRoom(
        chat_pb2.GetRoomRequest(room_id=room.room_id), metadata=chat.auth(first)
    )
    assert got.room.owner_id == first
    assert got.room.member_count == 2
    members = await chat.stub.ListMembers(
        chat_pb2.ListMembersRequest(room_id=room.room_id), metadata=chat.auth(first)
    )
    assert {m.user_id: m.role for m in members.members}[first] == chat_pb2.MEMBER_ROLE_OWNER


async def test_members_page_by_token(chat: Any) -> None:
    owner = chat.user("owner")
    others = [chat.user(f"m{i}") for i in range(6)]
    room = await chat.create_room(owner, members=others)

    seen: list[str] = []
    token = ""
    while True:
        page = await chat.stub.ListMembers(
            chat_pb2.ListMembersRequest(room_id=room.room_id, limit=3, page_token=token),
            metadata=chat.auth(owner),
        )
        seen.extend(m.user_id for m in page.members)
        token = page.next_page_token
        if not token:
            break

    assert seen == sorted([owner, *others])


async def test_check_membership_answers_the_subset(chat: Any) -> None:
    user = chat.user()
    mine = await chat.create_room(user)
    other = await chat.create_room(chat.user())

    response = await chat.stub.CheckMembership(
        chat_pb2.CheckMembershipRequest(room_ids=[other.room_id, mine.room_id, str(uuid.uuid4())]),
        metadata=chat.auth(user),
    )

    assert list(response.member_of) == [mine.room_id]


async def test_my_rooms_most_recent_first_with_unread_counts(chat: Any) -> None:
    me, friend = chat.user("me"), chat.user("friend")
    await chat.create_room(me, name="quiet")
    busy = await chat.create_room(friend, name="busy", members=[me])
    mine = await chat.create_room(me, name="mine", members=[friend])
    await chat.send(me, mine.room_id, "mine 1")
    for i in range(3):
        await chat.send(friend, busy.room_id, f"busy {i}")

    listed = await chat.stub.ListMyRooms(chat_pb2.ListMyRoomsRequest(), metadata=chat.auth(me))

    assert [s.room.name for s in listed.rooms] == ["busy", "mine", "quiet"]
    by_name = {s.room.name: s for s in listed.rooms}
    assert by_name["busy"].unread_count == 3
    assert by_name["busy"].last_message.content == "busy 2"
    assert by_name["busy"].role == chat_pb2.MEMBER_ROLE_MEMBER
    assert by_name["mine"].unread_count == 0  # my own message is read
    assert by_name["mine"].role == chat_pb2.MEMBER_ROLE_OWNER
    assert not by_name["quiet"].HasField("last_message")

    # Cached, and every change shows at once: a new message elsewhere, a read receipt.
    await chat.send(friend, mine.room_id, "ping")
    listed = await chat.stub.ListMyRooms(chat_pb2.ListMyRoomsRequest(), metadata=chat.auth(me))
    assert [s.room.name for s in listed.rooms] == ["mine", "busy", "quiet"]
    assert listed.rooms[0].unread_count == 1
    await chat.stub.MarkRead(
        chat_pb2.MarkReadRequest(room_id=busy.room_id, seq=3), metadata=chat.auth(me)
    )
    listed = await chat.stub.ListMyRooms(chat_pb2.ListMyRoomsRequest(), metadata=chat.auth(me))
    assert {s.room.name: s.unread_count for s in listed.rooms} == {
        "mine": 1,
        "busy": 0,
        "quiet": 0,
    }
    # Leaving a room drops it from the list.
    await chat.stub.LeaveRoom(
        chat_pb2.LeaveRoomRequest(room_id=busy.room_id), metadata=chat.auth(me)
    )
    listed = await chat.stub.ListMyRooms(chat_pb2.ListMyRoomsRequest(), metadata=chat.auth(me))
    assert [s.room.name for s in listed.rooms] == ["mine", "quiet"]


async def test_my_rooms_page_by_token(chat: Any) -> None:
    me = chat.user()
    for i in range(5):
        room = await chat.create_room(me, name=f"r{i}")
        await chat.send(me, room.room_id, "x")

    names: list[str] = []
    token = ""
    while True:
        page = await chat.stub.ListMyRooms(
            chat_pb2.ListMyRoomsRequest(limit=2, page_token=token), metadata=chat.auth(me)
        )
        names.extend(s.room.name for s in page.rooms)
        token = page.next_page_token
        if not token:
            break

    assert names == ["r4", "r3", "r2", "r1", "r0"]
