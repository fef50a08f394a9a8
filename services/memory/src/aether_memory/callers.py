"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks); `require_caller` refuses a call that came without one and says whether
the caller may write shared knowledge.

A service listed in MEMORY_DELEGATING_SERVICES (the worker) may act for a user
(aether_common.delegation): the caller is then that user, with no role or permission from the
header, so a delegate never writes knowledge.

Operators (RebuildIndex) are the admin role or the service token of a service listed in
MEMORY_OPERATOR_SERVICES (the worker, running `memory.reindex` jobs as itself); a delegated call
is its user's and holds no role, so it is never an operator."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from aether_common.errors import Forbidden, Unauthenticated
from aether_common.identity import CallerIdentity, current_identity


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    # The admin role or the knowledge-write permission.
    writes_knowledge: bool = False


def _identified() -> CallerIdentity:
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    return identity


def require_caller(*, admin_role: str, knowledge_permission: str) -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = _identified()
    writes = identity.has_role(admin_role) or identity.has_permission(knowledge_permission)
    return Caller(identity.user_id or "", writes_knowledge=writes)


def require_operator(*, admin_role: str, services: Collection[str]) -> str:
    """The caller's id when it is an operator (the admin role, or the token of one of
    `services`); UNAUTHENTICATED without a token, PERMISSION_DENIED for anyone else."""
    identity = _identified()
    if identity.is_service:
        allowed = identity.service_name in services
    else:
        allowed = identity.has_role(admin_role)
    if not allowed:
        raise Forbidden(
            "only the admin role or an operator service's token (MEMORY_OPERATOR_SERVICES) "
            "may rebuild an index",
            code="operators_only",
        )
    return identity.user_id or ""
