"""Namespaces and the rules of each: who may read, write and delete what
(protos/aether/memory/v1/memory.proto):

- "memories":  a user's own notes; only the owner reads, writes or deletes them. Ids are per
               owner, so one user's ids never collide with (or reveal) another's.
- "knowledge": shared documents; any signed-in user searches them, only the admin role or the
               knowledge-write permission (`memory:admin` by default) writes or deletes.
- "chat":      chat messages, written only from chat's message events (never by an RPC), and
               searched only within one room by its members (asked of chat, per call).
"""

from __future__ import annotations

from enum import StrEnum

from aether_common.errors import Forbidden, ValidationFailed
from aether_memory.callers import Caller


class Namespace(StrEnum):
    MEMORIES = "memories"
    KNOWLEDGE = "knowledge"
    CHAT = "chat"


NAMESPACES = tuple(Namespace)


def namespace(value: str) -> Namespace:
    if not value:
        raise ValidationFailed("namespace is required", field_errors={"namespace": "required"})
    try:
        return Namespace(value)
    except ValueError:
        known = ", ".join(NAMESPACES)
        raise ValidationFailed(
            f"unknown namespace {value[:64]!r} (known: {known})",
            field_errors={"namespace": f"one of {known}"},
        ) from None


def owner_scope(ns: Namespace, caller: Caller) -> str:
    """Whose id space a record lives in: the caller's for "memories", the shared one elsewhere."""
    return caller.user_id if ns is Namespace.MEMORIES else ""


def check_write(ns: Namespace, caller: Caller, knowledge_permission: str) -> None:
    """Upsert and Delete."""
    if ns is Namespace.CHAT:
        raise Forbidden(
            "the chat namespace is written only from chat's message events, not by calls"
        )
    if ns is Namespace.KNOWLEDGE and not caller.writes_knowledge:
        raise Forbidden(
            f"writing knowledge needs the admin role or the {knowledge_permission} permission",
            metadata={"missing": knowledge_permission},
        )
