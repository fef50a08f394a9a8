"""The HTTP edge: security headers, the request body limit, gzip for clients that accept it, CORS
that answers in the one error shape.

Plain ASGI (no BaseHTTPMiddleware: cheaper, and contextvars flow through). The security headers
ride on aether_common.http's RequestMiddleware and the body limit on the access layer
(access_middleware.py): a layer of their own each would wrap every request again.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from aether_common.http import ResponseHeaders
from aether_gateway.errors import error_response

# APIs answer JSON only: nothing may load, frame or submit anything from our responses.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI (/docs) loads its bundle from jsDelivr and starts it with an inline script.
DOCS_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src data: https://cdn.jsdelivr.net https://fastapi.tiangolo.com; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect"})
# Tokens and personal data: never stored by browsers or shared caches unless a route says so.
NO_STORE_PREFIXES = (
    "/api/auth",
    "/api/admin",
    "/api/chat",
    "/api/ai",
    "/api/memory",
    "/api/charts",
)


def security_headers(*, hsts_max_age_s: int) -> ResponseHeaders:
    """The headers every answer carries (errors and the generic 500 included), for
    aether_common.http's RequestMiddleware (the outermost layer), each unless a route set it."""
    common = [
        # Answers differ by Origin (CORS headers), whether or not this request sent one.
        (b"vary", b"Origin"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    api = [*common, (b"content-security-policy", API_CSP.encode())]
    docs = [*common, (b"content-security-policy", DOCS_CSP.encode())]
    no_store = (b"cache-control", b"no-store")
    hsts = (
        (b"strict-transport-security", f"max-age={hsts_max_age_s}; includeSubDomains".encode())
        if hsts_max_age_s
        else None
    )

    def headers(scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope["path"]
        chosen = docs if path in DOCS_PATHS else api
        if path.startswith(NO_STORE_PREFIXES):
            chosen = [*chosen, no_store]
        # uvicorn sets the scheme from X-Forwarded-Proto when the peer is a trusted proxy.
        if hsts is not None and scope.get("scheme") == "https":
            chosen = [*chosen, hsts]
        return chosen

    return headers


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed (chunked) body passes the limit; FastAPI re-raises
    HTTPExceptions from body reading, so the app's handler answers 413 in the error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the {limit} bytes allowed")


def declared_body_refusal(headers: Headers, max_bytes: int) -> Response | None:
    """400 for a bad Content-Length, 413 for one over the limit (before reading a byte)."""
    declared = headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        return error_response(400, "bad_request", "invalid Content-Length header")
    if int(declared) > max_bytes:
        return error_response(
            413, "payload_too_large", f"request body is larger than the {max_bytes} bytes allowed"
        )
    return None


def limited_receive(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, raising BodyTooLarge as soon as a body without Content-Length (chunked)
    passes the limit."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(max_bytes)
        return message

    return receive_limited


class CompressionMiddleware(GZipMiddleware):
    """Starlette's gzip, engaged only for clients that accept it (the others skip its layer)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"accept-encoding":
                    if b"gzip" in value:
                        break
                    await self.app(scope, receive, send)
                    return
            else:
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, engaged only for requests that carry an Origin (the others skip its
    layer; their `Vary: Origin` comes with the security headers), and a refused preflight
    answers in the one error shape (not plain text)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == b"origin" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        detail = f"CORS preflight refused: {refused} not allowed"
        return error_response(400, "cors_refused", detail, headers)


def cors_middleware(origins: Sequence[str]) -> Middleware:
    return Middleware(
        JsonCORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=[
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "Retry-After",
        ],
        # Bearer tokens, not cookies: browsers need not send credentials.
        allow_credentials=False,
        max_age=600,
    )
