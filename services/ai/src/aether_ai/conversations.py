"""Conversations: a user's chat threads with the AI and their messages, in PostgreSQL.

A conversation belongs to one user; another user's id answers exactly like an unknown one
(NotFound, same message), so ids cannot be probed. The engine reads the last few turns as the
model's history and appends the question and the answer once it has the answer, in the
statement that also records the usage (service.py). A new conversation gets its id at once
(the answer's first frame carries it) and is stored with its first turns: an answer that never
finished leaves no empty conversation behind.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether_ai import repository
from aether_common.errors import NotFound, ValidationFailed
from aether_common.postgres import PostgresDatabase, UnitOfWork

ROLES = frozenset({"user", "assistant"})
TITLE_CHARS = 80
UNTITLED = "New conversation"
MAX_LIST_LIMIT = 100
NOT_FOUND = "conversation not found"


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str
    mode: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation an answer belongs to: its id, the turns the model sees, and, for one
    not stored yet, what it is created with."""

    id: str
    history: builtins.list[Turn]
    is_new: bool = False
    title: str = ""
    mode: str = ""


def parse_conversation_id(conversation_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(conversation_id)
    except ValueError:
        raise ValidationFailed(
            "conversation_id must be a UUID", field_errors={"conversation_id": "not a UUID"}
        ) from None


def title_of(first_message: str) -> str:
    """The first non-blank line, at most TITLE_CHARS characters (an ellipsis marks a cut)."""
    line = next((ln.strip() for ln in first_message.splitlines() if ln.strip()), "")
    if not line:
        return UNTITLED
    if len(line) <= TITLE_CHARS:
        return line
    return line[: TITLE_CHARS - 1].rstrip() + "…"


class Conversations:
    def __init__(self, db: PostgresDatabase, *, history_turns: int = 6) -> None:
        if history_turns < 0:
            raise ValueError("history_turns must be >= 0")
        self._db = db
        self._history_turns = history_turns

    async def start_or_continue(
        self, user_id: str, conversation_id: str, *, first_message: str, mode: str
    ) -> Conversation:
        """An empty id starts a new conversation (an id, no history, nothing stored yet); else
        the user's conversation and its last `history_turns` turns, oldest first."""
        if not conversation_id:
            new_id = str(uuid.uuid4())
            return Conversation(new_id, [], is_new=True, title=title_of(first_message), mode=mode)
        key = parse_conversation_id(conversation_id)
        async with self._db.connection() as conn:
            if await repository.find_conversation(conn, user_id, key) is None:
                raise NotFound(NOT_FOUND)
            rows = (
                await repository.last_messages(conn, key, self._history_turns)
                if self._history_turns
                else []
            )
        history = [Turn(r["role"], r["content"], r["mode"], r["model"]) for r in rows]
        return Conversation(str(key), history)

    async def append(
        self,
        user_id: str,
        conversation: Conversation | str,
        turns: Sequence[Turn],
        *,
        requests: Sequence[repository.RequestRow] = (),
    ) -> None:
        """Adds the turns in order (creating a new conversation with them) and moves the
        conversation to the top of the user's list; `requests` (the answer's usage,
        UsageStore.rows) are written in the same statement. NotFound when the conversation is
        not (or no longer) the user's: its turns are not written, the usage still is."""
        for turn in turns:
            if turn.role not in ROLES:
                raise ValueError(f"a turn's role is 'user' or 'assistant', not {turn.role!r}")
        if isinstance(conversation, str):
            conversation = Conversation(conversation, [])
        latest_mode = next((t.mode for t in reversed(turns) if t.mode), "")
        write = repository.ConversationWrite(
            id=parse_conversation_id(conversation.id),
            is_new=conversation.is_new,
            title=conversation.title,
            mode=(latest_mode or conversation.mode) if conversation.is_new else latest_mode,
            messages=[(t.role, t.content, t.mode, t.model) for t in turns],
        )
        async with self._db.connection() as conn:
            stored = await repository.record_exchange(conn, user_id, requests, write)
        if not stored:
            raise NotFound(NOT_FOUND)

    async def list(
        self, user_id: str, limit: int, before: datetime | None
    ) -> ai_pb2.ListConversationsResponse:
        """The user's conversations, most recently updated first; `before` pages on."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValidationFailed(
                f"limit must be between 1 and {MAX_LIST_LIMIT}", field_errors={"limit": "1-100"}
            )
        if before is not None and before.tzinfo is None:
            before = before.replace(tzinfo=UTC)  # protobuf's ToDatetime() is naive UTC
        async with self._db.connection() as conn:
            rows = await repository.list_conversations(conn, user_id, limit, before)
        return ai_pb2.ListConversationsResponse(conversations=[_conversation(r) for r in rows])

    async def get(self, user_id: str, conversation_id: str) -> ai_pb2.GetConversationResponse:
        key = parse_conversation_id(conversation_id)

        async def read(uow: UnitOfWork) -> tuple[Any, list[Any]]:  # the count matches the list
            row = await repository.find_conversation(uow.conn, user_id, key)
            if row is None:
                raise NotFound(NOT_FOUND)
            return row, await repository.all_messages(uow.conn, key)

        row, messages = await self._db.transaction(read)
        return ai_pb2.GetConversationResponse(
            conversation=_conversation(row),
            messages=[
                ai_pb2.ConversationMessage(
                    role=m["role"],
                    content=m["content"],
                    mode=m["mode"],
                    model=m["model"],
                    created_at=_timestamp(m["created_at"]),
                )
                for m in messages
            ],
        )

    async def delete(self, user_id: str, conversation_id: str) -> None:
        key = parse_conversation_id(conversation_id)
        if not await self._db.transaction(
            lambda uow: repository.delete_conversation(uow.conn, user_id, key)
        ):
            raise NotFound(NOT_FOUND)


def _conversation(row: Any) -> ai_pb2.Conversation:
    return ai_pb2.Conversation(
        conversation_id=str(row["id"]),
        title=row["title"],
        mode=row["mode"],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(row["updated_at"]),
        message_count=row["message_count"],
    )


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
