"""Who is calling the auth service: the access token in the metadata, verified with our own
keys and checked against the revocation list (never trusting the gateway alone).

A service listed in AUTH_DELEGATING_SERVICES (the worker) may act for a user with its own token
plus `x-aether-on-behalf-of` (aether_common.delegation, applied by AuthApp around this resolver),
but ONLY where an RPC asks for `require_account_holder()`: ExportMyData, for the worker's
`gdpr.export` job. Every other caller RPC (`require_caller()`: the profile, password change,
MFA, sessions and logout, DeleteMyAccount, the admin ones) refuses a delegate with
PERMISSION_DENIED `delegation_refused`: those change or reveal the account's credentials, and the
delegation header is not signed by the user."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError

from aether_auth.revocation import RevocationList
from aether_auth.tokens import AccessClaims, AccessTokens
from aether_common.errors import Forbidden, Unauthenticated, Unavailable
from aether_common.identity import (
    ANONYMOUS,
    ON_BEHALF_OF_KEY,
    CallerIdentity,
    bearer_token,
    current_identity,
)

MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class TokenIdentity(CallerIdentity):
    """A caller identity that also carries the verified claims (sid, jti, exp...)."""

    claims: AccessClaims | None = None


class AccessTokenResolver:
    def __init__(self, tokens: AccessTokens, revocations: RevocationList) -> None:
        self._tokens = tokens
        self._revocations = revocations

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        token = bearer_token(metadata)
        if token is None:
            if metadata.get("authorization"):
                raise Unauthenticated("authorization metadata must be 'Bearer <access token>'")
            return ANONYMOUS
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("access token is too long", code="invalid_token")
        claims = await self._tokens.verify(token)
        try:
            revoked = await self._revocations.is_revoked(
                jti=claims.jti, sid=claims.sid, sub=claims.sub, iat=claims.iat
            )
        except RedisError:
            # Fail closed here: auth's own RPCs change accounts, a revoked token must not pass.
            raise Unavailable("cannot check token revocation right now; retry") from None
        if revoked:
            raise Unauthenticated("access token has been revoked", code="token_revoked")
        return TokenIdentity(
            user_id=claims.sub,
            roles=frozenset(claims.roles),
            permissions=frozenset(claims.perms),
            plan=claims.plan,
            access_token=token,
            claims=claims,
        )


def _refuse_delegate(identity: CallerIdentity) -> None:
    if identity.delegated_by is not None:
        raise Forbidden(
            f"service {identity.delegated_by!r} acting for a user may not call this RPC "
            f"({ON_BEHALF_OF_KEY} is accepted on ExportMyData only)",
            code="delegation_refused",
            metadata={"service": identity.delegated_by},
        )


def require_caller() -> AccessClaims:
    """The verified claims of the current caller, a user acting for themselves; Unauthenticated
    when there is none, Forbidden for a service (as itself or acting for a user)."""
    identity = current_identity()
    _refuse_delegate(identity)
    if not isinstance(identity, TokenIdentity) or identity.claims is None:
        raise Unauthenticated("this call needs an access token (authorization: Bearer ...)")
    if identity.claims.is_service:
        # Every caller RPC is about the caller's own account; a service has none.
        raise Forbidden("service tokens cannot call account RPCs", code="service_token")
    return identity.claims


def require_account_holder() -> str:
    """The id of the user whose account the call is about: the caller's own (their token), or
    the user a trusted service acts for (delegation). Forbidden for a service as itself."""
    identity = current_identity()
    if identity.delegated_by is not None and identity.user_id is not None:
        return identity.user_id
    return require_caller().sub
