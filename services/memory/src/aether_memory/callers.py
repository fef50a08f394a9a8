"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks); `require_caller` refuses a call that came without one and says whether
the caller may write shared knowledge.

A service listed in MEMORY_DELEGATING_SERVICES (the worker) may act for a user
(aether_common.delegation): the caller is then that user, with no role or permission from the
header, so a delegate never writes knowledge."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Unauthenticated
from aether_common.identity import current_identity


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
