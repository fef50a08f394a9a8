"""The HTTP edge: security headers, request body limit, CORS that answers in the one error shape.

Plain ASGI middleware (no BaseHTTPMiddleware: cheaper, and contextvars flow through).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
NO_STORE_PREFIXES = ("/api/auth", "/api/admin", "/api/chat", "/api/ai", "/api/memory")


class SecurityHeadersMiddleware:
    """Outermost, so every answer (errors and the generic 500 included) carries the headers."""

    def __init__(self, app: ASGIApp, *, hsts_max_age_s: int) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_max_age_s}; includeSubDomains" if hsts_max_age_s else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # uvicorn sets the scheme from X-Forwarded-Proto when the peer is a trusted proxy.
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "server" in headers:
                    del headers["server"]
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                headers.setdefault(
                    "Content-Security-Policy", DOCS_CSP if path in DOCS_PATHS else API_CSP
                )
                if path.startswith(NO_STORE_PREFIXES):
                    headers.setdefault("Cache-Control", "no-store")
                if https and self.hsts:
                    headers.setdefault("Strict-Transport-Security", self.hsts)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed (chunked) body passes the limit; FastAPI re-raises
    HTTPExceptions from body reading, so the app's handler answers 413 in the error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the {limit} bytes allowed")


class BodySizeLimitMiddleware:
    """413 for a declared Content-Length over the limit (before reading a byte), and for a body
    without one (chunked) as soon as what arrived passes the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "bad_request", "invalid Content-Length header")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await error_response(
                    413,
                    "payload_too_large",
                    f"request body is larger than the {self.max_bytes} bytes allowed",
                )(scope, receive, send)
                return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, receive_limited, send)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, but a refused preflight answers in the one error shape (not plain text)."""

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
