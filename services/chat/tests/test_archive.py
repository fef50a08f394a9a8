"""Retention's archive (archive.py, ArchiveExpiredMessages) against real MongoDB and S3: old
messages land in Parquet objects with every field, then leave MongoDB; newer ones stay; a run
stopped between its archive and its delete is finished by the next without losing or
duplicating a message; only the admin role and the worker's service token may run it."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
from google.protobuf.timestamp_pb2 import Timestamp

from aether.chat.v1 import chat_pb2
from aether_chat import ids
from aether_chat.archive import midnight, object_key
from aether_chat.repository import MessageRecord
from aether_common.errors import Forbidden, Unauthenticated, Unavailable, ValidationFailed
from aether_devstack import testkit
from aether_devstack.servers import free_port


async def _backdate(
    chat: Any, room_id: str, seqs: list[int], when: datetime
) -> list[dict[str, Any]]:
    """Make these messages of the room `when`-old: their ids carry their creation time, so they
    are stored again under an id of that moment. Returns the stored documents."""
    docs = []
    async for doc in chat.db.messages.find({"room_id": room_id, "seq": {"$in": seqs}}):
        await chat.db.messages.delete_one({"_id": doc["_id"]})
        stamp = int(when.timestamp() * 1000)
        moved = doc | {"_id": ids.new_id(stamp), "created_at": when.replace(microsecond=0)}
        await chat.db.messages.insert_one(moved)
        docs.append(moved)
    return sorted(docs, key=lambda d: d["seq"])


def _worker(chat: Any) -> tuple[tuple[str, str], ...]:
    """The worker's service token as auth issues it (subject `service:worker`, role service)."""
    return testkit.bearer_metadata(chat.token("service:worker", roles=["service"], perms=[]))


async def _archive(
    chat: Any, metadata: Any, **fields: Any
) -> chat_pb2.ArchiveExpiredMessagesResponse:
    answer: chat_pb2.ArchiveExpiredMessagesResponse = await chat.stub.ArchiveExpiredMessages(
        chat_pb2.ArchiveExpiredMessagesRequest(**fields), metadata=metadata
    )
    return answer


async def _rows(chat: Any, key: str) -> list[dict[str, Any]]:
    data = await chat.app.archive_bucket.get(key)
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


async def test_old_messages_go_to_parquet_with_every_field_then_leave_mongodb(
    start_chat: Any,
) -> None:
    chat = await start_chat()
    owner, other = chat.user("owner"), chat.user("other")
    room = await chat.create_room(owner, members=[other])
    quiet = await chat.create_room(other, name="quiet")
    await chat.send(owner, room.room_id, "first", mentions=[other])
    await chat.send(other, room.room_id, "second", reply_to_seq=1)
    await chat.send(owner, room.room_id, "third")
    await chat.send(owner, room.room_id, "kept 1")
    await chat.send(other, room.room_id, "kept 2")
    await chat.send(other, quiet.room_id, "alone")
    await chat.stub.EditMessage(
        chat_pb2.EditMessageRequest(room_id=room.room_id, seq=2, content="second, edited"),
        metadata=chat.auth(other),
    )
    await chat.stub.DeleteMessage(
        chat_pb2.DeleteMessageRequest(room_id=room.room_id, seq=3), metadata=chat.auth(owner)
    )
    assert len((await chat.history(owner, room.room_id)).messages) == 5  # now cached

    now = datetime.now(UTC)
    day_a = now - timedelta(days=400)
    day_b = now - timedelta(days=380)
    old_a = await _backdate(chat, room.room_id, [1, 2], day_a)
    old_b = await _backdate(chat, room.room_id, [3], day_b)
    old_quiet = await _backdate(chat, quiet.room_id, [1], day_a)

    answer = await _archive(chat, chat.admin(chat.user("admin")))

    cutoff = midnight(now - timedelta(days=365))
    assert answer.cutoff.ToDatetime(tzinfo=UTC) == cutoff
    assert (answer.archived, answer.deleted, answer.rooms) == (4, 4, 2)
    assert answer.bucket == chat.settings.s3_bucket
    keys = {
        object_key(day_a.date(), room.room_id): old_a,
        object_key(day_b.date(), room.room_id): old_b,
        object_key(day_a.date(), quiet.room_id): old_quiet,
    }
    assert sorted(answer.objects) == sorted(keys)
    for key, docs in keys.items():
        rows = await _rows(chat, key)
        assert rows == [
            {
                "message_id": doc["_id"],
                "room_id": doc["room_id"],
                "seq": doc["seq"],
                "sender_id": doc["sender_id"],
                "client_msg_id": doc["client_msg_id"],
                "content": doc["content"],
                "mentions": doc["mentions"],
                "reply_to_seq": doc["reply_to_seq"],
                "created_at": doc["created_at"],
                "edited_at": doc.get("edited_at"),
                "deleted": doc["deleted"],
                "deleted_by": doc["deleted_by"],
                "deleted_at": doc.get("deleted_at"),
            }
            for doc in docs
        ]
    # What the rows say, beyond equality with the documents.
    first, second = await _rows(chat, object_key(day_a.date(), room.room_id))
    assert (first["content"], first["mentions"], first["sender_id"]) == ("first", [other], owner)
    assert (second["content"], second["reply_to_seq"]) == ("second, edited", 1)
    assert second["edited_at"] is not None
    (third,) = await _rows(chat, object_key(day_b.date(), room.room_id))
    assert (third["deleted"], third["deleted_by"], third["content"]) == (True, owner, "")
    assert third["deleted_at"] is not None

    # Gone from MongoDB; the newer messages stay, and history (its cache too) shows only them.
    archived_ids = [doc["_id"] for docs in keys.values() for doc in docs]
    assert await chat.db.messages.count_documents({"_id": {"$in": archived_ids}}) == 0
    page = await chat.history(owner, room.room_id)
    assert [m.content for m in page.messages] == ["kept 1", "kept 2"]
    assert page.last_seq == 5

    # Nothing is left to do: a second run writes nothing.
    again = await _archive(chat, _worker(chat))
    assert (again.archived, again.deleted, list(again.objects)) == (0, 0, [])


async def test_a_run_stopped_between_archive_and_delete_loses_and_duplicates_nothing(
    start_chat: Any,
) -> None:
    chat = await start_chat()
    owner = chat.user()
    room = await chat.create_room(owner)
    for i in range(6):
        await chat.send(owner, room.room_id, f"m{i + 1}")
    old = datetime.now(UTC) - timedelta(days=500)
    docs = await _backdate(chat, room.room_id, [1, 2, 3, 4], old)
    key = object_key(old.date(), room.room_id)

    # The archive step alone (the process died before deleting), then half the deletes done.
    stored = [MessageRecord.from_doc(doc) for doc in docs]
    assert await chat.app.archive.write_object(old.date(), room.room_id, stored) == key
    assert len(await _rows(chat, key)) == 4
    await chat.db.messages.delete_many({"_id": {"$in": [docs[0]["_id"], docs[1]["_id"]]}})
    # And a message edited before the rerun: its new state wins in the object.
    await chat.stub.EditMessage(
        chat_pb2.EditMessageRequest(room_id=room.room_id, seq=4, content="m4, edited"),
        metadata=chat.auth(owner),
    )

    answer = await _archive(chat, _worker(chat))

    assert (answer.archived, answer.deleted, list(answer.objects)) == (2, 2, [key])
    rows = await _rows(chat, key)
    assert [r["message_id"] for r in rows] == [doc["_id"] for doc in docs]  # once each, by seq
    assert [r["content"] for r in rows] == ["m1", "m2", "m3", "m4, edited"]
    assert await chat.db.messages.count_documents({"room_id": room.room_id}) == 2
    assert [m.content for m in (await chat.history(owner, room.room_id)).messages] == ["m5", "m6"]

    # The fallback job runs the same path and finds nothing more to do.
    assert await chat.app.retention.run_once() == 0
    assert len(await _rows(chat, key)) == 4


async def test_before_narrows_the_run_and_may_not_pass_the_retention(start_chat: Any) -> None:
    chat = await start_chat(message_retention_days=30)
    owner = chat.user()
    room = await chat.create_room(owner)
    for i in range(2):
        await chat.send(owner, room.room_id, f"m{i + 1}")
    now = datetime.now(UTC)
    await _backdate(chat, room.room_id, [1], now - timedelta(days=90))
    await _backdate(chat, room.room_id, [2], now - timedelta(days=40))

    sixty_days_ago = Timestamp()
    sixty_days_ago.FromDatetime(now - timedelta(days=60))
    answer = await _archive(chat, _worker(chat), before=sixty_days_ago)
    assert answer.cutoff.ToDatetime(tzinfo=UTC) == midnight(now - timedelta(days=60))
    assert (answer.archived, answer.deleted) == (1, 1)
    assert [m.seq for m in (await chat.history(owner, room.room_id)).messages] == [2]

    tomorrow = Timestamp()
    tomorrow.FromDatetime(now - timedelta(days=29))
    refused = await testkit.failure(_archive(chat, _worker(chat), before=tomorrow))
    assert isinstance(refused, ValidationFailed)
    assert "before" in refused.field_errors
    assert [m.seq for m in (await chat.history(owner, room.room_id)).messages] == [2]


async def test_only_the_admin_role_and_the_worker_may_archive(start_chat: Any) -> None:
    chat = await start_chat()
    owner = chat.user()
    room = await chat.create_room(owner)
    await chat.send(owner, room.room_id, "old")
    await _backdate(chat, room.room_id, [1], datetime.now(UTC) - timedelta(days=400))

    user = await testkit.failure(_archive(chat, chat.auth(owner)))
    assert isinstance(user, Forbidden)
    moderator = await testkit.failure(_archive(chat, chat.auth(owner, perms=["chat:moderate"])))
    assert isinstance(moderator, Forbidden)
    other_service = testkit.bearer_metadata(
        chat.token("service:alerts", roles=["service"], perms=[])
    )
    assert isinstance(await testkit.failure(_archive(chat, other_service)), Forbidden)
    anonymous = await testkit.failure(
        chat.stub.ArchiveExpiredMessages(chat_pb2.ArchiveExpiredMessagesRequest())
    )
    assert isinstance(anonymous, Unauthenticated)
    assert await chat.db.messages.count_documents({"room_id": room.room_id}) == 1

    # The worker's token serves this RPC only: rooms and messages are people's.
    refused = await testkit.failure(
        chat.stub.CreateRoom(chat_pb2.CreateRoomRequest(name="bots"), metadata=_worker(chat))
    )
    assert isinstance(refused, Forbidden)
    assert (await _archive(chat, _worker(chat))).deleted == 1


async def test_s3_away_is_unavailable_and_deletes_nothing(start_chat: Any) -> None:
    chat = await start_chat(s3_endpoint=f"http://127.0.0.1:{free_port()}", s3_timeout_s=1)
    owner = chat.user()
    room = await chat.create_room(owner)
    await chat.send(owner, room.room_id, "old")
    await _backdate(chat, room.room_id, [1], datetime.now(UTC) - timedelta(days=400))

    refused = await testkit.failure(_archive(chat, _worker(chat)))

    assert isinstance(refused, Unavailable)
    assert await chat.db.messages.count_documents({"room_id": room.room_id}) == 1
