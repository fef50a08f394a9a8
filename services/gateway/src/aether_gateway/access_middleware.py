"""Who is calling and whether they may: the body limit, the token verified once per request, then
the rate limit, in one middleware layer.

Runs as middleware (not a route dependency) so that every request counts against the limit,
including unknown routes and bodies that fail to parse. A declared body over the limit is
refused first, before any token is looked at (middleware.py has the limit itself). A token that
does not verify does not stop the request here: the caller is limited per IP, and a route that
needs a caller answers 401 with the reason (`deps.require_caller`). A service token (auth's
IssueServiceToken) is the exception: it is refused with a 401 on every route, public ones too,
since a service presenting its identity at the public edge is a mistake to surface, not an
anonymous visit. Ops paths (probes, metrics) are neither verified nor limited.

The outcome lands in `scope["state"]["access"]` (`request.state.access`) and in the identity
contextvar (aether_common.identity), so logs and outgoing gRPC calls carry the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aether_common.access_tokens import AccessToken, TokenRejected
from aether_common.errors import AetherError, Unauthenticated
from aether_common.identity import ANONYMOUS, CallerIdentity, reset_identity, set_identity
from aether_common.metrics import TOKENS_REJECTED
from aether_gateway.middleware import declared_body_refusal, limited_receive
from aether_gateway.rate_limit import rate_limited_body
from aether_gateway.resources import GatewayResources

# Served to probes and scrapers: never verified, never limited.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/health"})
MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class Access:
    client_ip: str
    user_agent: str
    token: AccessToken | None = None
    # Why the presented credentials were refused (401), or could not be checked (503).
    error: AetherError | None = None


def bearer(headers: Headers) -> tuple[str | None, AetherError | None]:
    value = headers.get("authorization")
    if value is None:
        return None, None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None, Unauthenticated(
            "Authorization header must be 'Bearer <access token>'", code="invalid_token"
        )
    return token, None


def client_ip(scope: Scope) -> str:
    # uvicorn already replaced the peer with X-Forwarded-For's client when the peer is a
    # trusted proxy (FORWARDED_ALLOW_IPS); never trust that header from anyone else.
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def identity_of(token: AccessToken) -> CallerIdentity:
    return CallerIdentity(
        user_id=token.subject,
        roles=token.roles,
        permissions=token.permissions,
        plan=token.plan,
        access_token=token.raw,
    )


class AccessMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = declared_body_refusal(headers, self.max_body_bytes)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        receive = limited_receive(receive, self.max_body_bytes)
        if scope["path"] in OPS_PATHS:
            await self.app(scope, receive, send)
            return
        resources: GatewayResources = scope["app"].state.gateway
        access = await self._identify(resources, headers, client_ip(scope))
        gate = await resources.gate.check(
            access.token, access.client_ip, limits=resources.settings.rate_limit_enabled
        )
        if gate.revoked_reason is not None:
            TOKENS_REJECTED.labels(gate.revoked_reason).inc()
            error = TokenRejected(gate.revoked_reason, "access token has been revoked")
            access = Access(access.client_ip, access.user_agent, error=error)
        scope.setdefault("state", {})["access"] = access

        decision = gate.decision
        if decision is not None and not decision.allowed:
            response = JSONResponse(
                rate_limited_body(decision.retry_after_s),
                status_code=429,
                headers=decision.headers(),
            )
            await response(scope, receive, send)
            return
        if isinstance(access.error, TokenRejected) and access.error.reason == "service_token":
            refused = JSONResponse(
                access.error.http_body(),
                status_code=access.error.http_status,
                headers=access.error.http_headers(),
            )
            await refused(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and decision is not None:
                MutableHeaders(scope=message).update(decision.headers())
            await send(message)

        identity = set_identity(identity_of(access.token) if access.token else ANONYMOUS)
        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            reset_identity(identity)

    async def _identify(self, resources: GatewayResources, headers: Headers, ip: str) -> Access:
        user_agent = headers.get("user-agent", "")[:MAX_USER_AGENT]
        raw, error = bearer(headers)
        if raw is None:
            return Access(ip, user_agent, error=error)
        try:
            token = await resources.verifier.verify(raw)
        except AetherError as exc:
            return Access(ip, user_agent, error=exc)
        return Access(ip, user_agent, token=token)
