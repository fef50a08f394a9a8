"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks); `require_caller` refuses a call that came without one.

Chat is a people's service: a service token (`identity.is_service`) is refused by every RPC but
the operators' one, ArchiveExpiredMessages, which the worker calls as itself
(`require_operator`: the worker's token or the admin role).

A service listed in CHAT_DELEGATING_SERVICES (the worker, for `gdpr.export`) may act for a user
(aether_common.delegation): the call is then that user's. A delegate holds no role or
permission: never a moderator, never an operator (the worker archives as itself, unnamed).
"""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Forbidden, Unauthenticated
from aether_common.identity import CallerIdentity, current_identity

# Platform permission (auth's rbac: the moderator and admin roles) to moderate every room.
MODERATE = "chat:moderate"
# Who runs retention: this role, or the service token of one of ARCHIVE_SERVICES.
ADMIN_ROLE = "admin"
ARCHIVE_SERVICES = frozenset({"worker"})


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    # Holds `chat:moderate`: deletes any message and removes members in any room.
    moderator: bool = False


def _identified() -> CallerIdentity:
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    return identity


def require_caller() -> Caller:
    """The verified user calling the current RPC; UNAUTHENTICATED when the call had no token,
    PERMISSION_DENIED for a service token (rooms and messages are people's)."""
    identity = _identified()
    if identity.is_service:
        raise Forbidden(
            f"service {identity.service_name!r} may not call this RPC: chat serves users",
            code="service_not_allowed",
        )
    return Caller(identity.user_id or "", moderator=identity.has_permission(MODERATE))


def require_operator() -> str:
    """The caller's id when it may run retention (the admin role, or the worker's token);
    PERMISSION_DENIED otherwise."""
    identity = _identified()
    if identity.is_service:
        if identity.service_name in ARCHIVE_SERVICES:
            return identity.user_id or ""
    elif identity.has_role(ADMIN_ROLE):
        return identity.user_id or ""
    raise Forbidden(
        "only the admin role or the worker's service token may archive messages",
        code="operators_only",
    )
