"""Namespaces and who may do what in each (protos/aether/memory/v1/memory.proto):

- "memories":  a user's own notes; only the owner reads, writes or deletes them. Ids are per
               owner, so one user's ids never collide with (or reveal) another's.
- "knowledge": shared documents; any signed-in user searches them, only the admin role or the
               knowledge-write permission (`memory:admin` by default) writes or deletes.
- "chat":      chat messages, written only from chat's message events (never by an RPC), and
               searched only within one room by its members (asked of chat, per call).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aether_common.errors import Forbidden, Unauthenticated, ValidationFailed
from aether_common.identity import current_identity


class Namespace(StrEnum):
    MEMORIES = "memories"
    KNOWLEDGE = "knowledge"
    CHAT = "chat"


NAMESPACES = tuple(Namespace)


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    # The admin role or the knowledge-write permission.
    writes_knowledge: bool = False


def require_caller(*, admin_role: str, knowledge_permission: str) -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    writes = identity.has_role(admin_role) or identity.has_permission(knowledge_permission)
    return Caller(identity.user_id, writes_knowledge=writes)


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
