"""Who is calling: the access token in the gRPC metadata, verified against auth's JWKS
(aether_common.auth_jwks). Operators are the admin role and services (a service token); users
are everyone else, with their plan (the quotas depend on it)."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.errors import Unauthenticated
from aether_common.identity import current_identity


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    plan: str | None = None
    admin: bool = False
    service: bool = False

    @property
    def operator(self) -> bool:
        return self.admin or self.service


def require_caller(*, admin_role: str) -> Caller:
    """The verified caller of the current RPC; UNAUTHENTICATED when the call had no token."""
    identity = current_identity()
    if identity.user_id is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    return Caller(
        identity.user_id,
        plan=identity.plan,
        admin=identity.has_role(admin_role),
        service=identity.is_service,
    )
