"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks). Every RPC needs a caller; admin RPCs need the admin role or the
`ai:admin` permission (checked here, not only at the gateway).

A service listed in AI_DELEGATING_SERVICES (the worker) may act for a user: its service token
plus `x-aether-on-behalf-of: <user id>` (aether_common.delegation, applied where the token is
verified: AiApp's `verifying_server`). The caller is then that user, so usage, conversations,
preferences and the cache are theirs, as for their own call; `delegated_by` names the service.
A delegate never holds the admin role or a permission: admin RPCs stay refused."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Forbidden, Unauthenticated
from aether_common.identity import current_identity

ADMIN_ROLE = "admin"
ADMIN_PERMISSION = "ai:admin"


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    admin: bool = False
    # The service acting for `user_id` (delegation), else None.
    delegated_by: str | None = None


def require_caller() -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    admin = identity.has_role(ADMIN_ROLE) or identity.has_permission(ADMIN_PERMISSION)
    if identity.delegated_by is not None:
        admin = False  # the delegation grants the user's ordinary rights only
    return Caller(identity.user_id, admin=admin, delegated_by=identity.delegated_by)


def require_admin() -> Caller:
    caller = require_caller()
    if not caller.admin:
        raise Forbidden(
            f"this call needs the {ADMIN_ROLE} role or the {ADMIN_PERMISSION} permission",
            metadata={"permission": ADMIN_PERMISSION},
        )
    return caller
