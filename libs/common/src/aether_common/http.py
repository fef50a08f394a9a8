"""The HTTP face every service shares: one app factory, one error shape, health and metrics.

`create_http_app` returns a FastAPI app that already has, in one middleware layer
(`RequestMiddleware`):
- a request id per request (a sane incoming `X-Request-ID` is kept, else one is made), echoed
  on the response and bound to `request_id_var` so every log line carries it;
- RED metrics labelled by the route TEMPLATE (`/users/{user_id}`), never the raw path, so the
  label set stays bounded; requests that match no route share one label;
and, in its handlers and routes:
- one JSON error shape `{"error": code, "detail": message, "status_code": n}` for typed domain
  errors, validation failures, malformed JSON, 404/405, a datastore outage (503 with
  Retry-After: `aether_common.outages`) and anything unexpected (a generic 500, logged with its
  traceback, never leaked);
- `/healthz` (the process answers), `/readyz` (every check and component, each under a short
  timeout; 503 while starting, stopping or when one fails) and `/metrics` (Prometheus text).
The runner (runner.py) drives the readiness state through `readiness_of(app)`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from aether_common import outages
from aether_common.errors import AetherError, InternalError, ValidationFailed
from aether_common.lifecycle import Check, Component
from aether_common.logging import get_logger, request_id_var
from aether_common.metrics import HTTP_LATENCY, HTTP_REQUESTS
from aether_common.telemetry import http_telemetry

REQUEST_ID_HEADER = "X-Request-ID"
# Kept when it looks like an id (a uuid, a trace id, a short token); anything else is replaced,
# so a client cannot inject newlines or megabytes into our logs.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"
# Errors an HTTP status maps to when a framework (not our code) raised it.
_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation",
    429: "rate_limited",
    503: "unavailable",
    504: "timeout",
}

log = get_logger(__name__)


# -- readiness -------------------------------------------------------------------------------
class ReadinessState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(frozen=True)
class NamedCheck:
    """Turns a plain coroutine function into a `Check` (`NamedCheck("postgres", ping)`)."""

    name: str
    fn: Callable[[], Awaitable[bool]]

    async def __call__(self) -> bool:
        return await self.fn()


class Readiness:
    """What /readyz reports: the lifecycle state plus every check and component, run live."""

    def __init__(
        self, checks: Sequence[Check], components: Sequence[Component], timeout: float
    ) -> None:
        self.checks = list(checks)
        self.components = list(components)
        self.timeout = timeout
        # Ready by default: an app served without the runner (tests, scripts) has no start phase.
        self.state = ReadinessState.READY

    def add_components(self, components: Sequence[Component]) -> None:
        self.components += [c for c in components if c not in self.components]

    async def report(self) -> tuple[bool, dict[str, Any]]:
        if self.state is not ReadinessState.READY:
            return False, {"status": self.state.value, "checks": {}}
        probes: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
            (c.name, c) for c in self.checks
        ] + [(c.name, c.ready) for c in self.components]
        results = await asyncio.gather(*(self._probe(name, fn) for name, fn in probes))
        ok = all(r["ok"] for r in results)
        checks: dict[str, Any] = {}
        for (name, _), result in zip(probes, results, strict=True):
            # Two consumers may share a name; neither result may hide the other.
            key, n = name, 1
            while key in checks:
                n += 1
                key = f"{name}#{n}"
            checks[key] = result
        return ok, {"status": "ready" if ok else "not_ready", "checks": checks}

    async def _probe(self, name: str, fn: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any]
        try:
            async with asyncio.timeout(self.timeout):
                ok = bool(await fn())
            result = {"ok": ok} if ok else {"ok": False, "error": "reported not ready"}
        except TimeoutError:
            result = {"ok": False, "error": f"timed out after {self.timeout}s"}
        except Exception as exc:
            # The class only: a message may carry addresses or credentials; the log has it all.
            log.warning("readiness check failed", check=name, exc_info=exc)
            result = {"ok": False, "error": type(exc).__name__}
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return result


def readiness_of(app: FastAPI) -> Readiness:
    readiness: Readiness = app.state.aether_readiness
    return readiness


# -- middleware (plain ASGI: cheaper than BaseHTTPMiddleware and contextvar-safe) -------------
ResponseHeaders = Callable[[Scope], Sequence[tuple[bytes, bytes]]]


class RequestMiddleware:
    """Outermost of ours, one layer for what every request gets: an id (bound for logs, echoed
    on the response), the RED metrics, the last-resort 500 in the one error shape, and the
    service's own response headers (`response_headers(scope)`, each set unless the app did).

    One layer rather than one middleware per concern: every ASGI layer wraps `send` again, and
    on a proxy like the gateway those layers cost more than the work itself.
    """

    def __init__(self, app: ASGIApp, response_headers: ResponseHeaders | None = None) -> None:
        self.app = app
        self.response_headers = response_headers
        self._children: dict[tuple[str, str], tuple[_ByStatus, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _SANE_REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)
        )
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        try:
            if kind == "http":
                await self._http(scope, receive, send, request_id.encode())
            else:
                await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> None:
        status = 500
        started_response = False
        root_path = scope.get("root_path", "")
        extra = self.response_headers(scope) if self.response_headers is not None else ()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k not in _REPLACED_HEADERS
                ]
                headers.append((b"x-request-id", request_id))
                if extra:
                    _add_missing(headers, extra)
                message["headers"] = headers
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # A datastore away is a 503 with Retry-After, whichever route met it.
            error: AetherError | None = outages.as_unavailable(exc)
            if error is not None:
                log.warning("datastore unavailable", path=scope["path"], error=repr(exc))
            else:
                log.exception("unhandled error", method=scope["method"], path=scope["path"])
                error = InternalError("internal server error")
            if started_response:
                raise  # too late for a clean answer; the server closes the connection
            await _error_response(error)(scope, receive, send_wrapper)
        finally:
            requests, latency = self._metrics(scope["method"], _route_template(scope, root_path))
            requests[status].inc()
            latency.observe(time.perf_counter() - started)

    def _metrics(self, method: str, route: str) -> tuple[_ByStatus, Any]:
        """The metric children of a method and route template (a bounded set), made once."""
        key = (method, route)
        found = self._children.get(key)
        if found is None:
            found = _ByStatus(method, route), HTTP_LATENCY.labels(method, route)
            self._children[key] = found
        return found


class _ByStatus(dict[int, Any]):
    """aether_http_requests_total's children of one method and route, by status."""

    def __init__(self, method: str, route: str) -> None:
        super().__init__()
        self.method, self.route = method, route

    def __missing__(self, status: int) -> Any:
        child = self[status] = HTTP_REQUESTS.labels(self.method, self.route, str(status))
        return child


# Never passed on from the app: ours is the request id, and a service does not name its software.
_REPLACED_HEADERS = frozenset((b"x-request-id", b"server"))


def _add_missing(headers: list[tuple[bytes, bytes]], extra: Sequence[tuple[bytes, bytes]]) -> None:
    """Each extra header unless the app set it; `vary` values are merged into the app's."""
    present = {k: i for i, (k, _) in enumerate(headers)}
    for key, value in extra:
        at = present.get(key)
        if at is None:
            headers.append((key, value))
        elif key == b"vary":
            current = headers[at][1]
            if value.lower() not in {v.strip().lower() for v in current.split(b",")}:
                headers[at] = (key, current + b", " + value)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_template(scope: Scope, root_path: str) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    # A mounted sub-app's routes are relative to its mount point.
    mount_prefix = str(scope.get("root_path", ""))[len(root_path) :]
    return mount_prefix + path


# -- error handlers: every error leaves in the one shape ---------------------------------------
def _error_response(error: AetherError) -> JSONResponse:
    return JSONResponse(
        error.http_body(), status_code=error.http_status, headers=error.http_headers()
    )


async def _on_aether_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AetherError)
    if exc.http_status >= 500:
        log.error("request failed", error=exc.error_code, detail=exc.detail, path=request.url.path)
    return _error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error_response(ValidationFailed(describe_validation_errors(exc.errors())))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status) or _status_code_name(status)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else _phrase(status)
    body = {"error": code, "detail": detail, "status_code": status}
    if status in (204, 304):  # no body allowed
        return Response(status_code=status, headers=exc.headers)
    return JSONResponse(body, status_code=status, headers=exc.headers)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """pydantic's error list as one line a person can act on: `body.email: field required`."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            parts.append(f"malformed JSON in request body: {reason} at position {error['loc'][-1]}")
            continue
        where = _format_loc(error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        if len(message) > 1 and message[1].islower():
            message = message[0].lower() + message[1:]
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def _format_loc(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _status_code_name(status: int) -> str:
    return _phrase(status).lower().replace(" ", "_").replace("-", "_")


# -- the factory -------------------------------------------------------------------------------
def create_http_app(
    service_name: str,
    *,
    checks: Sequence[Check] = (),
    components: Sequence[Component] = (),
    routers: Sequence[APIRouter] = (),
    lifespan: Lifespan[FastAPI] | None = None,
    check_timeout: float = 2.0,
    version: str = "0.1.0",
    docs: bool = True,
    response_headers: ResponseHeaders | None = None,
) -> FastAPI:
    """A FastAPI app with Aether's middleware, error handlers and ops endpoints.

    `checks` and `components` feed /readyz (the runner adds the components it drives too);
    `lifespan` is the service's own (create pools and clients there, not in globals);
    `response_headers(scope)` gives headers every HTTP answer carries unless the app set them.
    """
    app = FastAPI(
        title=service_name,
        version=version,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=http_telemetry(),
    )
    app.state.service_name = service_name
    app.state.aether_readiness = Readiness(checks, components, check_timeout)

    app.add_exception_handler(AetherError, _on_aether_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_middleware(RequestMiddleware, response_headers=response_headers)

    # The routes go straight into the app's router, not as included routers: FastAPI >= 0.137
    # keeps an included router as one node and scans its routes again on every request that
    # reaches it, so each router placed before a route made that route dearer.
    # Probes and scrapes come every few seconds; the service's own routes are matched first.
    for router in (*routers, _ops_router(service_name, app.state.aether_readiness)):
        app.router.routes.extend(router.routes)
    return app


def _ops_router(service_name: str, readiness: Readiness) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service_name}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, body = await readiness.report()
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
