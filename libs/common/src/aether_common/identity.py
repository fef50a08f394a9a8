"""Who is calling: the caller identity of the current request, and how it crosses gRPC.

The identity lives in a contextvar, set by the gateway's HTTP auth (from a verified JWT) or by
the gRPC server interceptor (through an `IdentityResolver`), and read by business code through
`current_identity()` (each service checks what it needs in its own callers.py).

On the wire (gRPC metadata; keys are lower case as gRPC requires):
- `authorization: Bearer <jwt>`: the caller's access token. This is what a receiving service
  should trust, after verifying it itself (the auth service plugs in a JWKS resolver).
- `x-aether-user-id`, `x-aether-roles`, `x-aether-permissions` (comma-separated),
  `x-aether-plan`: the same claims, unsigned. Outgoing calls always carry them as hints for logs
  and tools; no production resolver reads them (anyone who can reach a port can set a header):
  only the tests' `aether_devstack.testkit.trusted_headers.TrustedHeadersResolver` does.
The default resolver (`AnonymousResolver`) trusts nothing and makes every caller anonymous.

Services have identities too (aether_common.service_tokens): a service token's subject is
`service:<client_id>` and its only role is `service`, which no user holds; `is_service` says so.
Each service decides what a service may call (charts: its reads, with `charts:read`); the gateway
refuses service tokens outright.

A service may act for a user (aether_common.delegation): it calls with its own token plus
`x-aether-on-behalf-of: <user id>`, and a receiving service that lists it makes the user the
caller (`delegated_by` names the service). Such an identity sends both on outgoing calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Protocol

AUTHORIZATION_KEY = "authorization"
USER_ID_KEY = "x-aether-user-id"
ROLES_KEY = "x-aether-roles"
PERMISSIONS_KEY = "x-aether-permissions"
PLAN_KEY = "x-aether-plan"
ON_BEHALF_OF_KEY = "x-aether-on-behalf-of"
BEARER_PREFIX = "bearer "
SERVICE_ROLE = "service"  # the role of service tokens (auth's tokens.SERVICE_ROLE)
SERVICE_SUBJECT_PREFIX = "service:"


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """The authenticated caller, or `ANONYMOUS` (no user id)."""

    user_id: str | None = None
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    plan: str | None = None
    # Kept so calls made on the user's behalf can forward it; never printed.
    access_token: str | None = field(default=None, repr=False)
    # Delegation: the service acting for this user; `access_token` is then that service's.
    delegated_by: str | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def is_service(self) -> bool:
        """A service acting as itself (a service token), not a user."""
        return (
            self.user_id is not None
            and self.user_id.startswith(SERVICE_SUBJECT_PREFIX)
            and SERVICE_ROLE in self.roles
        )

    @property
    def service_name(self) -> str | None:
        """The client id of a service caller (`alerts`), else None."""
        if self.user_id is None or not self.is_service:
            return None
        return self.user_id.removeprefix(SERVICE_SUBJECT_PREFIX)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def has_permission(self, permission: str) -> bool:
        # Permissions are explicit: the token lists them, roles do not imply any here.
        return permission in self.permissions


ANONYMOUS = CallerIdentity()

_identity_var: ContextVar[CallerIdentity] = ContextVar("aether_caller_identity", default=ANONYMOUS)


def current_identity() -> CallerIdentity:
    return _identity_var.get()


def set_identity(identity: CallerIdentity) -> Token[CallerIdentity]:
    return _identity_var.set(identity)


def reset_identity(token: Token[CallerIdentity]) -> None:
    _identity_var.reset(token)


@contextmanager
def use_identity(identity: CallerIdentity) -> Iterator[CallerIdentity]:
    """Act as `identity` inside the block (background jobs, tests)."""
    token = set_identity(identity)
    try:
        yield identity
    finally:
        reset_identity(token)


# -- the wire -----------------------------------------------------------------------------------
def identity_to_metadata(identity: CallerIdentity) -> list[tuple[str, str]]:
    """Metadata entries that carry `identity` on an outgoing call."""
    entries: list[tuple[str, str]] = []
    if identity.access_token:
        entries.append((AUTHORIZATION_KEY, f"Bearer {identity.access_token}"))
    if identity.user_id is not None:
        entries.append((USER_ID_KEY, identity.user_id))
        if identity.roles:
            entries.append((ROLES_KEY, ",".join(sorted(identity.roles))))
        if identity.permissions:
            entries.append((PERMISSIONS_KEY, ",".join(sorted(identity.permissions))))
        if identity.plan:
            entries.append((PLAN_KEY, identity.plan))
        if identity.delegated_by is not None:
            entries.append((ON_BEHALF_OF_KEY, identity.user_id))
    return entries


def metadata_to_dict(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """Text metadata as a dict (binary `-bin` values dropped, the first value of a key wins)."""
    result: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            result.setdefault(key.lower(), value)
    return result


def bearer_token(metadata: Mapping[str, str]) -> str | None:
    value = metadata.get(AUTHORIZATION_KEY, "")
    if value[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
        return None
    return value[len(BEARER_PREFIX) :].strip() or None


class IdentityResolver(Protocol):
    """Turns an incoming call's metadata into the caller identity.

    Return `ANONYMOUS` when no credentials came; raise `errors.Unauthenticated` when credentials
    came but do not verify (a bad or expired token), so the caller learns why.
    """

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity: ...


class AnonymousResolver:
    """The default: trusts no header; every caller is anonymous until a verifier is plugged in."""

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        return ANONYMOUS
