"""The handshake every client WebSocket shares (chat's `WS /api/chat/connect`, `WS /ws/ai-chat`).

Before a socket serves anything: the browser's origin must be allowed, no token may ride in the
URL (it would land in access logs), and the access token, from the `Authorization` header or else
a first auth frame, must verify, not be revoked and fit the caller's HTTP rate limit (a connect
counts as one request). session.py runs these steps; each socket keeps what differs: how its
frames parse and the error frame a refusal sends before the close code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.types import Receive, Scope

from aether_common.access_tokens import AccessToken
from aether_common.errors import AetherError
from aether_gateway.access_middleware import bearer, client_ip
from aether_gateway.resources import GatewayResources
from aether_gateway.ws.close_codes import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_RATE_LIMITED,
    CLOSE_TRY_LATER,
    CLOSE_UNAUTHENTICATED,
    MAX_REASON_CHARS,
)

URL_TOKEN_PARAMS = ("token", "access_token", "jwt", "auth")


class Refused(Exception):
    """Ends the handshake: the socket sends its error frame (when `error`), then closes."""

    def __init__(self, code: int, reason: str, error: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error = error


class WebSocketGone(Exception):
    """The client left during the handshake."""


def check_origin(headers: Headers, allowed: Collection[str]) -> None:
    origin = headers.get("origin")
    if origin is None:
        return  # not a browser
    origin = origin.rstrip("/")
    if origin in allowed:
        return
    host = headers.get("host")
    if host is not None and urlsplit(origin).netloc == host:
        return  # same origin as the gateway itself
    raise Refused(CLOSE_FORBIDDEN_ORIGIN, "origin not allowed", "forbidden_origin")


def check_url(scope: Scope) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if any(name in query for name in URL_TOKEN_PARAMS):
        raise Refused(
            CLOSE_UNAUTHENTICATED,
            "tokens in the URL are refused: use the Authorization header or an auth frame",
            "token_in_url",
        )


async def first_frame(receive: Receive, timeout_s: float) -> dict[str, Any]:
    """The first client message (the auth frame's carrier), within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            message: dict[str, Any] = dict(await receive())
    except TimeoutError:
        raise Refused(
            CLOSE_UNAUTHENTICATED, f"no auth frame within {timeout_s:g} s", "auth_timeout"
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketGone
    return message


async def authenticate(
    resources: GatewayResources,
    scope: Scope,
    headers: Headers,
    auth_frame: Callable[[], Awaitable[str]],
) -> AccessToken:
    """The caller's verified token: from the header, else from `auth_frame()`."""
    raw, error = bearer(headers)
    if error is not None:
        raise Refused(CLOSE_UNAUTHENTICATED, error.detail, error.error_code)
    if raw is None:
        raw = await auth_frame()
    try:
        token = await resources.verifier.verify(raw)
    except AetherError as exc:
        code = CLOSE_TRY_LATER if exc.http_status >= 500 else CLOSE_UNAUTHENTICATED
        raise Refused(code, exc.detail[:MAX_REASON_CHARS], exc.error_code) from None
    # Revocation (logout, revoked sessions) and the caller's HTTP rate limit.
    gate = await resources.gate.check(
        token, client_ip(scope), limits=resources.settings.rate_limit_enabled
    )
    if gate.revoked_reason is not None:
        raise Refused(CLOSE_UNAUTHENTICATED, "access token has been revoked", "invalid_token")
    decision = gate.decision
    if decision is not None and not decision.allowed:
        raise Refused(
            CLOSE_RATE_LIMITED,
            f"rate limit exceeded; retry in {decision.retry_after_s} s",
            "rate_limited",
        )
    return token
