"""Messages: send, seq, idempotency, edit, delete, moderation, history by cursor."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aether.chat.v1 import chat_pb2
from aether_chat import schemas
from aether_chat.callers import Caller
from aether_chat.metrics import SEND_BATCH_SIZE, TRANSACTION_RETRIES
from aether_chat.service import NewMessage, Sent
from aether_common.errors import Forbidden, NotFound, PreconditionFailed, ValidationFailed


async def test_send_stores_the_message_with_the_next_seq(chat: Any) -> None:
    owner, other = chat.user("ada"), chat.user("bob")
    room = await chat.create_room(owner, members=[other])

    first = await chat.send(owner, room.room_id, "gm", mentions=[other])
    second = await chat.send(other, room.room_id, "gm to you", reply_to_seq=1)

    assert first.created
    assert second.created
    assert (first.message.seq, second.message.seq) == (1, 2)
    message = second.message
    assert message.room_id == room.room_id
    assert message.sender_id == other
    assert message.content == "gm to you"
    assert message.reply_to_seq == 1
    assert message.message_id
    assert not message.deleted
    assert message.created_at.seconds > 0
    assert not message.HasField("edited_at")
    assert list(first.message.mentions) == [other]
    stored = await chat.db.messages.find_one({"_id": message.message_id})
    assert stored["seq"] == 2
    assert stored["content"] == "gm to you"
    got = await chat.stub.GetRoom(
        chat_pb2.GetRoomRequest(room_id=room.room_id), metadata=chat.auth(owner)
    )
    assert got.room.last_seq == 2
    assert got.room.member_count == 2


async def test_fifty_concurrent_sends_get_seqs_one_to_fifty(chat: Any) -> None:
    owner = chat.user()
    senders = [chat.user(f"s{i}") for i in range(5)]
    room = await chat.create_room(owner, members=senders)

    sent = await asyncio.gather(
        *(chat.send(senders[i % 5], room.room_id, f"msg {i}") for i in range(50))
    )

    assert sorted(r.message.seq for r in sent) == list(range(1, 51))
    page = await chat.history(owner, room.room_id, limit=100)
    assert [m.seq for m in page.messages] == list(range(1, 51))
    assert page.last_seq == 50
    assert not page.has_more


async def test_concurrent_sends_from_two_replicas_keep_seqs_dense(start_chat: Any) -> None:
    """Two service instances on one database race for the room's counter and retry."""
    first = await start_chat()
    second = await start_chat()
    owner = first.user()
    room = await first.create_room(owner)

    sent = await asyncio.gather(
        *((first if i % 2 else second).send(owner, room.room_id, f"m{i}") for i in range(30))
    )

    assert sorted(r.message.seq for r in sent) == list(range(1, 31))


async def test_a_write_conflict_that_outlasts_the_retries_answers_unavailable(
    start_chat: Any, kit: Any
) -> None:
    """Another writer holds the room's document in a transaction it keeps open (a second
    session): each attempt of the send conflicts on the room's counter. Once the attempts are
    spent the call answers UNAVAILABLE with Retry-After, never INTERNAL, and stores nothing;
    once the other writer lets go, the same send goes through."""
    chat = await start_chat(transaction_attempts=3)
    owner = chat.user()
    room = await chat.create_room(owner)
    client_msg_id = str(uuid.uuid4())
    retries = TRANSACTION_RETRIES._value.get()

    async with chat.mongo.start_session() as holder:
        await holder.start_transaction()
        await chat.db.rooms.update_one(
            {"_id": room.room_id}, {"$set": {"held": True}}, session=holder
        )
        error = await kit.failure(chat.send(owner, room.room_id, client_msg_id=client_msg_id))
        await holder.abort_transaction()

    assert error.grpc_code.name == "UNAVAILABLE", error
    assert error.retry_after == 1.0
    assert TRANSACTION_RETRIES._value.get() == retries + 2
    assert await chat.db.messages.count_documents({}) == 0
    sent = await chat.send(owner, room.room_id, client_msg_id=client_msg_id)
    assert sent.created
    assert sent.message.seq == 1


async def test_a_retry_with_the_same_client_msg_id_returns_the_stored_message(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    client_msg_id = str(uuid.uuid4())

    first = await chat.send(owner, room.room_id, "once", client_msg_id=client_msg_id)
    again = await chat.send(owner, room.room_id, "once", client_msg_id=client_msg_id)
    racing = await asyncio.gather(
        *(chat.send(owner, room.room_id, "twice", client_msg_id="race-1") for _ in range(5))
    )
    after = await chat.send(owner, room.room_id, "next")

    assert first.created
    assert not again.created
    assert again.message == first.message
    assert sum(r.created for r in racing) == 1
    assert len({r.message.message_id for r in racing}) == 1
    # Retries consume no seq: the next message follows without a gap.
    assert after.message.seq == 3
    assert await chat.db.messages.count_documents({"room_id": room.room_id}) == 3


async def test_the_same_client_msg_id_from_another_sender_is_another_message(chat: Any) -> None:
    owner, other = chat.user(), chat.user()
    room = await chat.create_room(owner, members=[other])

    a = await chat.send(owner, room.room_id, "a", client_msg_id="same")
    b = await chat.send(other, room.room_id, "b", client_msg_id="same")

    assert a.created
    assert b.created
    assert (a.message.seq, b.message.seq) == (1, 2)


async def test_without_client_msg_id_each_send_is_new(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)

    a = await chat.send(owner, room.room_id, "a", client_msg_id="")
    b = await chat.send(owner, room.room_id, "a", client_msg_id="")

    assert a.created
    assert b.created
    assert a.message.client_msg_id != b.message.client_msg_id


async def test_edit_and_delete_own_messages(chat: Any, kit: Any) -> None:
    owner, other = chat.user(), chat.user()
    room = await chat.create_room(owner, members=[other])
    mine = (await chat.send(other, room.room_id, "typo")).message

    edited = await chat.stub.EditMessage(
        chat_pb2.EditMessageRequest(room_id=room.room_id, seq=mine.seq, content="fixed"),
        metadata=chat.auth(other),
    )
    assert edited.message.content == "fixed"
    assert edited.message.HasField("edited_at")
    assert edited.message.seq == mine.seq
    assert edited.message.message_id == mine.message_id

    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=mine.seq),
        metadata=chat.auth(other),
    )
    await chat.stub.DeleteMessage(  # twice: nothing more happens
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=mine.seq),
        metadata=chat.auth(other),
    )
    page = await chat.history(owner, room.room_id)
    assert [(m.seq, m.deleted, m.content) for m in page.messages] == [(1, True, "")]

    error = await kit.failure(
        chat.stub.EditMessage(
            chat_pb2.EditMessageRequest(room_id=room.room_id, seq=mine.seq, content="back"),
            metadata=chat.auth(other),
        )
    )
    assert isinstance(error, PreconditionFailed)
    assert "deleted" in error.detail


async def test_only_the_sender_edits_and_only_moderators_delete_others(chat: Any, kit: Any) -> None:
    owner, alice, bob = chat.user("owner"), chat.user("alice"), chat.user("bob")
    room = await chat.create_room(owner, members=[alice, bob])
    alices = (await chat.send(alice, room.room_id, "alice's")).message

    edit = await kit.failure(
        chat.stub.EditMessage(
            chat_pb2.EditMessageRequest(room_id=room.room_id, seq=alices.seq, content="mine now"),
            metadata=chat.auth(owner),  # not even the owner edits someone else's words
        )
    )
    assert isinstance(edit, Forbidden)
    assert "own" in edit.detail
    delete = await kit.failure(
        chat.stub.DeleteMessage(
            chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=alices.seq),
            metadata=chat.auth(bob),
        )
    )
    assert isinstance(delete, Forbidden)

    # The owner moderates: deletes anyone's message.
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=alices.seq),
        metadata=chat.auth(owner),
    )
    stored = await chat.db.messages.find_one({"_id": alices.message_id})
    assert stored["deleted"]
    assert stored["deleted_by"] == owner
    assert stored["content"] == ""

    # A room admin too; and a platform moderator (chat:moderate) without being a member.
    await chat.db.members.update_one(
        {"room_id": room.room_id, "user_id": bob}, {"$set": {"role": "admin"}}
    )
    owners = (await chat.send(owner, room.room_id, "owner's")).message
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=owners.seq),
        metadata=chat.auth(bob),
    )
    third = (await chat.send(alice, room.room_id, "third")).message
    moderator = chat.user("mod")
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=third.seq),
        metadata=chat.auth(moderator, perms=["chat:moderate"]),
    )
    page = await chat.history(owner, room.room_id)
    assert [m.deleted for m in page.messages] == [True, True, True]


async def test_non_members_neither_read_nor_write(chat: Any, kit: Any) -> None:
    owner, stranger = chat.user(), chat.user("stranger")
    room = await chat.create_room(owner)
    await chat.send(owner, room.room_id, "members only")

    calls = [
        chat.stub.SendMessage(
            chat_pb2.SendMessageRequest(room_id=room.room_id, content="hi", client_msg_id="x"),
            metadata=chat.auth(stranger),
        ),
        chat.stub.GetHistory(
            chat_pb2.GetHistoryRequest(room_id=room.room_id), metadata=chat.auth(stranger)
        ),
        chat.stub.GetHistory(
            chat_pb2.GetHistoryRequest(room_id=room.room_id, after_seq=0, limit=5),
            metadata=chat.auth(stranger),
        ),
        chat.stub.EditMessage(
            chat_pb2.EditMessageRequest(room_id=room.room_id, seq=1, content="x"),
            metadata=chat.auth(stranger),
        ),
        chat.stub.DeleteMessage(
            chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=1),
            metadata=chat.auth(stranger),
        ),
        chat.stub.MarkRead(
            chat_pb2.MarkReadRequest(room_id=room.room_id, seq=1), metadata=chat.auth(stranger)
        ),
        chat.stub.ListMembers(
            chat_pb2.ListMembersRequest(room_id=room.room_id), metadata=chat.auth(stranger)
        ),
    ]
    for call in calls:
        error = await kit.failure(call)
        assert isinstance(error, Forbidden), error
        assert "not a member" in error.detail
    # The refused send took no seq.
    assert (await chat.send(owner, room.room_id, "next")).message.seq == 2


async def test_unknown_rooms_and_messages_are_not_found(chat: Any, kit: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    missing = str(uuid.uuid4())

    for call in (
        chat.stub.SendMessage(
            chat_pb2.SendMessageRequest(room_id=missing, content="hi"), metadata=chat.auth(owner)
        ),
        chat.stub.GetHistory(
            chat_pb2.GetHistoryRequest(room_id=missing), metadata=chat.auth(owner)
        ),
        chat.stub.EditMessage(
            chat_pb2.EditMessageRequest(room_id=room.room_id, seq=9, content="x"),
            metadata=chat.auth(owner),
        ),
        chat.stub.DeleteMessage(
            chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=9),
            metadata=chat.auth(owner),
        ),
    ):
        error = await kit.failure(call)
        assert isinstance(error, NotFound), error


async def test_history_pages_by_cursor_in_both_directions(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    for i in range(1, 26):
        await chat.send(owner, room.room_id, f"m{i}")

    latest = await chat.history(owner, room.room_id, limit=10)
    assert [m.seq for m in latest.messages] == list(range(16, 26))
    assert latest.has_more
    assert latest.last_seq == 25

    before = await chat.history(owner, room.room_id, before_seq=16, limit=10)
    assert [m.seq for m in before.messages] == list(range(6, 16))
    assert before.has_more
    oldest = await chat.history(owner, room.room_id, before_seq=6, limit=10)
    assert [m.seq for m in oldest.messages] == [1, 2, 3, 4, 5]
    assert not oldest.has_more

    after = await chat.history(owner, room.room_id, after_seq=3, limit=10)
    assert [m.seq for m in after.messages] == list(range(4, 14))
    assert after.has_more
    # after_seq 0 is "unset" in proto3: the latest page, as for a client that saw nothing yet.
    unset = await chat.history(owner, room.room_id, after_seq=0, limit=10)
    assert unset == latest
    resume = await chat.history(owner, room.room_id, after_seq=20, limit=10)
    assert [m.seq for m in resume.messages] == list(range(21, 26))
    assert not resume.has_more
    beyond = await chat.history(owner, room.room_id, after_seq=25)
    assert list(beyond.messages) == []
    assert not beyond.has_more
    assert beyond.last_seq == 25

    default = await chat.history(owner, room.room_id)
    assert len(default.messages) == 25
    assert not default.has_more
    assert [m.content for m in default.messages][:2] == ["m1", "m2"]


async def test_history_of_an_empty_room(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)

    page = await chat.history(owner, room.room_id)

    assert list(page.messages) == []
    assert not page.has_more
    assert page.last_seq == 0


async def test_the_latest_page_is_cached_and_every_change_invalidates_it(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    await chat.send(owner, room.room_id, "one")

    first = await chat.history(owner, room.room_id)
    keys = [k async for k in chat.redis.scan_iter(match=f"{chat.settings.redis_prefix}cache:*")]
    assert keys, "the latest page was not cached"
    assert await chat.history(owner, room.room_id) == first  # served from the cache

    await chat.send(owner, room.room_id, "two")
    assert [m.content for m in (await chat.history(owner, room.room_id)).messages] == [
        "one",
        "two",
    ]
    await chat.stub.EditMessage(
        chat_pb2.EditMessageRequest(room_id=room.room_id, seq=1, content="uno"),
        metadata=chat.auth(owner),
    )
    assert (await chat.history(owner, room.room_id)).messages[0].content == "uno"
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=2), metadata=chat.auth(owner)
    )
    assert (await chat.history(owner, room.room_id)).messages[1].deleted


async def test_reply_to_must_name_an_earlier_message(chat: Any, kit: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    await chat.send(owner, room.room_id, "first")

    error = await kit.failure(chat.send(owner, room.room_id, "reply", reply_to_seq=5))

    assert isinstance(error, ValidationFailed)
    assert error.field_errors == {"reply_to_seq": error.detail}
    assert (await chat.send(owner, room.room_id, "ok", reply_to_seq=1)).message.seq == 2


async def test_one_batch_answers_each_send_on_its_own(chat: Any) -> None:
    """Sends that share a transaction (batching.py), in two rooms and one that does not exist:
    refusals and retries are answered one by one, the rest is stored with dense seqs per room."""
    owner, member, stranger = chat.user("owner"), chat.user("member"), chat.user("stranger")
    room = await chat.create_room(owner, members=[member])
    other = await chat.create_room(member, members=[owner])
    stored = await chat.send(owner, room.room_id, "earlier", client_msg_id="dup")
    await chat.send(member, other.room_id, "other earlier")

    def draft(user: str, content: str, room_id: str = room.room_id, **fields: Any) -> Any:
        fields.setdefault("client_msg_id", uuid.uuid4().hex)
        fields.setdefault("reply_to_seq", 0)
        new = NewMessage(room_id=room_id, content=content, mentions=(), **fields)
        return chat.app.service.draft_message(Caller(user), new)

    drafts = [
        draft(owner, "one"),
        draft(stranger, "not a member"),
        draft(owner, "other one", other.room_id),
        draft(member, "two", reply_to_seq=1),
        draft(member, "bad reply", reply_to_seq=99),
        draft(owner, "nowhere", str(uuid.uuid4())),  # no such room
        draft(owner, "earlier", client_msg_id="dup"),  # a retry of a stored message
        draft(member, "twin", client_msg_id="twin"),
        draft(member, "twin", client_msg_id="twin"),  # the same send twice in one batch
        draft(stranger, "not a member there either", other.room_id),
        draft(member, "other two", other.room_id, reply_to_seq=2),
        draft(owner, "three"),
    ]
    keys = [f"room:{d.room_id}" for d in drafts]
    answers = await chat.app.database.transaction(
        lambda uow: chat.app.service.send_batch(uow, drafts), keys=keys
    )

    sent = [a for a in answers if isinstance(a, Sent)]
    assert [(a.message.content, a.message.seq, a.created) for a in sent] == [
        ("one", 2, True),
        ("other one", 2, True),
        ("two", 3, True),
        ("earlier", 1, False),
        ("twin", 4, True),
        ("twin", 4, False),
        ("other two", 3, True),
        ("three", 5, True),
    ]
    assert schemas.message_pb(sent[3].message) == stored.message
    assert isinstance(answers[1], Forbidden)
    assert isinstance(answers[4], ValidationFailed)
    assert isinstance(answers[5], NotFound)
    assert isinstance(answers[9], Forbidden)
    page = await chat.history(owner, room.room_id)
    assert [m.seq for m in page.messages] == [1, 2, 3, 4, 5]
    assert page.messages[2].reply_to_seq == 1
    other_page = await chat.history(member, other.room_id)
    assert [m.content for m in other_page.messages] == ["other earlier", "other one", "other two"]
    assert [m.seq for m in other_page.messages] == [1, 2, 3]


async def test_concurrent_sends_to_one_room_share_transactions(chat: Any) -> None:
    owner = chat.user()
    room = await chat.create_room(owner)
    before = _batches()

    await asyncio.gather(*(chat.send(owner, room.room_id, f"m{i}") for i in range(40)))

    transactions = _batches() - before
    assert transactions < 40, "no send shared a transaction"
    page = await chat.history(owner, room.room_id)
    assert [m.seq for m in page.messages] == list(range(1, 41))


async def test_concurrent_sends_to_several_rooms_share_transactions(chat: Any) -> None:
    owner = chat.user()
    rooms = [(await chat.create_room(owner)).room_id for _ in range(4)]
    before = _batches()

    await asyncio.gather(*(chat.send(owner, rooms[i % 4], f"m{i}") for i in range(40)))

    transactions = _batches() - before
    assert transactions < 10, f"{transactions} transactions for 40 sends in 4 rooms"
    for n, room_id in enumerate(rooms):
        page = await chat.history(owner, room_id)
        assert [m.seq for m in page.messages] == list(range(1, 11))
        assert sorted(m.content for m in page.messages) == sorted(
            f"m{i}" for i in range(40) if i % 4 == n
        )


def _batches() -> float:
    for metric in SEND_BATCH_SIZE.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0
