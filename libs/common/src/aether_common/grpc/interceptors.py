"""grpc.aio interceptors: everything a call gets, in ONE layer per side.

Server (`ServerCallInterceptor`), per call and in this order:
1. a SERVER span continuing the caller's trace (W3C `traceparent` in the metadata), made the
   current span while the servicer runs; health and reflection calls are not traced;
2. the request id (a sane incoming `x-request-id`, else a new one) and the caller identity (the
   configured `IdentityResolver`; a refusal ends the call with its status) in contextvars;
3. the servicer; what it raises leaves as a status: an `AetherError` as its code, message and
   google.rpc details, a failed downstream call with its meaning kept, a datastore outage
   (`aether_common.outages`) as UNAVAILABLE with Retry-After, anything else as INTERNAL with a
   generic message (the real one only in the log);
4. `aether_grpc_server_handled_total{method,code}`, the latency histogram, the span's status
   and one access-log line.

Client (`client_interceptors()`, one instance per call kind: grpc.aio files an interceptor
under one kind): the default deadline, the request id, the caller identity and the trace context
in the metadata, a CLIENT span, `aether_grpc_client_handled_total{method,code}` and the latency.

One layer rather than one interceptor per concern: each grpc.aio interceptor is a layer of
Python around every call, and four of them on each side more than doubled a call's cost
(`make bench-rpc`). The wrapped server handler is made once per method, not once per call.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aether_common import errors, outages
from aether_common.identity import (
    ANONYMOUS,
    AnonymousResolver,
    CallerIdentity,
    IdentityResolver,
    current_identity,
    identity_to_metadata,
    metadata_to_dict,
    reset_identity,
    set_identity,
)
from aether_common.logging import get_logger, request_id_var
from aether_common.metrics import (
    GRPC_CLIENT_HANDLED,
    GRPC_CLIENT_LATENCY,
    GRPC_SERVER_HANDLED,
    GRPC_SERVER_LATENCY,
)

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:  # the runtime classes are not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# Servicer methods: coroutine functions, async generators, or context.write() coroutines.
Behavior: TypeAlias = Callable[..., Any]
ClientInterceptor: TypeAlias = _UnaryUnary | _UnaryStream | _StreamUnary | _StreamStream

REQUEST_ID_KEY = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Probes and reflection calls: not traced, and logged at debug only (they come every few seconds).
QUIET_SERVICE_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
GENERIC_INTERNAL_MESSAGE = "internal error"
# OpenTelemetry's RPC semantic conventions.
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"

log = get_logger(__name__)
_tracer = trace.get_tracer("aether_common.grpc")


def _quiet(method: str) -> bool:
    return method.startswith(QUIET_SERVICE_PREFIXES)


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name}


def _end_span(span: Span | None, code: grpc.StatusCode, detail: str = "") -> None:
    if span is None:
        return
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {detail}" if detail else code.name))
    span.end()


def _reset(reset: Callable[[], None]) -> None:
    # A streaming call's generator may be finalised in another context; then nothing to undo.
    with suppress(ValueError):
        reset()


# == server side ================================================================================
async def abort_with(context: Context, error: errors.AetherError, domain: str) -> NoReturn:
    """End the call with `error`'s status code, message and google.rpc details."""
    status = error.grpc_status(domain)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # abort always raises


def outcome_code(context: Context, exc: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with."""
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
    if isinstance(exc, errors.AetherError):
        return exc.grpc_code
    return grpc.StatusCode.UNKNOWN  # what grpc reports for an unhandled exception


# The outcome of a call whose exception was turned into its status: read from the context.
_ABORTED = grpc.aio.AbortError()


class _ServerCall:
    """One call's state from start to end: span, request id, identity, clock."""

    __slots__ = ("context", "identity", "method", "span", "started", "tokens", "user_id")

    def __init__(self, method: str, context: Context) -> None:
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        self.span: Span | None = None
        self.identity: CallerIdentity = ANONYMOUS
        self.user_id: str | None = None
        self.tokens: list[Callable[[], None]] = []


class ServerCallInterceptor(_ServerInterceptor):
    def __init__(self, resolver: IdentityResolver | None = None, *, domain: str = "aether") -> None:
        self._resolver: IdentityResolver = resolver or AnonymousResolver()
        self._domain = domain
        # Handlers come from the services registered before start: wrap each method once.
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        try:
            return self._handlers[method]  # type: ignore[return-value]
        except KeyError:
            pass
        handler = await continuation(handler_call_details)
        # None (an unknown method: grpc answers UNIMPLEMENTED) is not remembered: the cache
        # only holds methods that exist, so a caller cannot grow it.
        if handler is None:
            return handler
        wrapped = self._wrap(handler, method)
        self._handlers[method] = wrapped
        return wrapped

    # -- one call ---------------------------------------------------------------------------
    async def _begin(self, method: str, context: Context) -> _ServerCall:
        call = _ServerCall(method, context)
        metadata = metadata_to_dict(context.invocation_metadata())
        if not _quiet(method):
            parent = propagate.extract(metadata)
            call.span = _tracer.start_span(
                method, context=parent, kind=SpanKind.SERVER, attributes=_rpc_attributes(method)
            )
            span_token = otel_context.attach(trace.set_span_in_context(call.span, parent))
            call.tokens.append(lambda: otel_context.detach(span_token))
        incoming = metadata.get(REQUEST_ID_KEY, "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        id_token = request_id_var.set(request_id)
        call.tokens.append(lambda: request_id_var.reset(id_token))
        if call.span is not None:
            call.span.set_attribute("aether.request_id", request_id)
        try:
            call.identity = await self._resolver.resolve(metadata)
        except Exception as exc:
            await self._refuse(call, exc)
        call.user_id = call.identity.user_id
        if call.span is not None and call.user_id is not None:
            call.span.set_attribute("enduser.id", call.user_id)
        identity_token = set_identity(call.identity)
        call.tokens.append(lambda: reset_identity(identity_token))
        bound = structlog.contextvars.bind_contextvars(grpc_method=method, user_id=call.user_id)
        call.tokens.append(lambda: structlog.contextvars.reset_contextvars(**bound))
        return call

    async def _refuse(self, call: _ServerCall, exc: Exception) -> NoReturn:
        if not isinstance(exc, errors.AetherError):
            log.exception("grpc.identity_resolver_failed", method=call.method)
            exc = errors.InternalError(GENERIC_INTERNAL_MESSAGE)
        self._end(call, exc.grpc_code, exc.detail)
        await abort_with(call.context, exc, self._domain)

    async def _fail(self, call: _ServerCall, exc: Exception) -> NoReturn:
        """Turn what the servicer raised into the call's status: context.abort raises
        AbortError, and the status set is the call's outcome (`_ABORTED`)."""
        if isinstance(exc, errors.AetherError):
            await abort_with(call.context, exc, self._domain)
        if isinstance(exc, grpc.aio.AioRpcError):
            # An uncaught failure of a call this servicer made: pass on its typed error.
            log.warning("grpc.downstream_error", method=call.method, code=exc.code().name)
            await abort_with(call.context, errors.from_grpc_error(exc), self._domain)
        unavailable = outages.as_unavailable(exc, self._domain.removeprefix("aether."))
        if unavailable is not None:  # not the caller's fault, nor a bug: retry later
            log.warning("grpc.datastore_unavailable", method=call.method, error=repr(exc))
            await abort_with(call.context, unavailable, self._domain)
        log.exception("grpc.unhandled_error", method=call.method)
        if call.span is not None:
            call.span.record_exception(exc)
        await abort_with(call.context, errors.InternalError(GENERIC_INTERNAL_MESSAGE), self._domain)

    def _end(self, call: _ServerCall, code: grpc.StatusCode, detail: str = "") -> None:
        seconds = time.perf_counter() - call.started
        GRPC_SERVER_HANDLED.labels(call.method, code.name).inc()
        GRPC_SERVER_LATENCY.labels(call.method).observe(seconds)
        (log.debug if _quiet(call.method) and code is grpc.StatusCode.OK else log.info)(
            "grpc.request",
            method=call.method,
            code=code.name,
            user_id=call.user_id,
            duration_ms=round(seconds * 1000, 2),
        )
        _end_span(call.span, code, detail or (call.context.details() or ""))
        call.span = None
        for reset in reversed(call.tokens):
            _reset(reset)
        call.tokens.clear()

    def _settle(self, call: _ServerCall, exc: BaseException | None) -> None:
        self._end(call, outcome_code(call.context, exc))

    # -- wrapping a handler -----------------------------------------------------------------
    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        def unary(behavior: Behavior) -> Behavior:
            async def wrapped(request: Any, context: Context) -> Any:
                call = await self._begin(method, context)
                outcome: BaseException | None = None
                try:
                    result = behavior(request, context)
                    return await result if inspect.isawaitable(result) else result
                except (grpc.aio.AbortError, asyncio.CancelledError) as exc:
                    outcome = exc
                    raise
                except Exception as exc:
                    outcome = _ABORTED
                    await self._fail(call, exc)
                finally:
                    self._settle(call, outcome)

            return wrapped

        def stream(behavior: Behavior) -> Behavior:
            async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
                call = await self._begin(method, context)
                outcome: BaseException | None = None
                try:
                    result = behavior(request, context)
                    if inspect.isawaitable(result):  # a servicer that uses context.write()
                        await result
                        return
                    # Closed here, not left to the garbage collector, when the call ends early
                    # (cancelled at a yield): its cleanup (a model slot, an upstream stream)
                    # must run now.
                    async with aclosing(result) as responses:
                        async for response in responses:
                            yield response
                except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit) as exc:
                    outcome = exc
                    raise
                except Exception as exc:
                    outcome = _ABORTED
                    await self._fail(call, exc)
                finally:
                    self._settle(call, outcome)

            return wrapped

        serde = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **serde)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **serde)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **serde)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **serde)
        return handler


# == client side ================================================================================
def _method_name(method: str | bytes) -> str:
    # grpc.aio hands interceptors the method as bytes (grpc/grpc#31092).
    return method.decode() if isinstance(method, bytes) else method


def record_client(method: str, code: grpc.StatusCode, started: float, span: Span | None) -> None:
    """A finished outgoing call: its metrics and its span."""
    GRPC_CLIENT_HANDLED.labels(method, code.name).inc()
    GRPC_CLIENT_LATENCY.labels(method).observe(time.perf_counter() - started)
    _end_span(span, code)


def outgoing(method: str, metadata: grpc.aio.Metadata) -> Span | None:
    """Adds what every outgoing call carries to `metadata` (the request id, the identity of the
    call being served, the trace context; what the caller set explicitly wins) and starts the
    call's span. The client interceptors and `ServiceClient` (which calls on a plain channel,
    sparing grpc.aio's per-call interceptor task) both prepare calls with it."""
    request_id = request_id_var.get()
    if request_id and REQUEST_ID_KEY not in metadata:
        metadata.add(REQUEST_ID_KEY, request_id)
    for key, value in identity_to_metadata(current_identity()):
        if key not in metadata:
            metadata.add(key, value)
    if _quiet(method):
        return None
    span = _tracer.start_span(method, kind=SpanKind.CLIENT, attributes=_rpc_attributes(method))
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    for key, value in carrier.items():
        metadata.add(key, value)
    return span


class _ClientCall:
    """Prepares an outgoing call: deadline, metadata, span."""

    def __init__(self, default_timeout: float | None, default_stream_timeout: float | None) -> None:
        self._unary_timeout = default_timeout
        self._stream_timeout = default_stream_timeout

    def prepare(
        self, details: grpc.aio.ClientCallDetails, *, streaming: bool
    ) -> tuple[grpc.aio.ClientCallDetails, str, Span | None]:
        method = _method_name(details.method)
        timeout = details.timeout
        if timeout is None:
            timeout = self._stream_timeout if streaming else self._unary_timeout
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        span = outgoing(method, metadata)
        prepared = grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )
        return prepared, method, span


# No generator-based context manager here: a generator abandoned mid-call is closed by the garbage
# collector, at any allocation, and its cleanup would then record a metric while prometheus_client
# may hold the same (non-reentrant) lock on this thread: the gateway hung that way once, a
# cancelled AI stream's observation collected inside another observation's `labels()`. Plain
# try/finally in coroutines and async generators runs from the event loop instead (asyncio
# finalizes abandoned async generators in a task).
async def _observe_unary(call: Any, method: str, span: Span | None, started: float) -> Any:
    code = grpc.StatusCode.CANCELLED
    try:
        code = await call.code()  # waits for the call; does not raise on failure
    finally:
        record_client(method, code, started, span)
    return call


async def _observe_stream(
    call: Any, method: str, span: Span | None, started: float
) -> AsyncIterator[Any]:
    # Streams are observed by iterating them: read them with `async for`, not `call.read()`.
    code = grpc.StatusCode.CANCELLED
    try:
        async for response in call:
            yield response
        code = await call.code()
    finally:
        if not call.done():  # the reader stopped early
            call.cancel()
        elif code is grpc.StatusCode.CANCELLED:  # failed while streaming (it raised)
            code = await call.code()
        record_client(method, code, started, span)


class _UnaryUnaryLayer(_ClientCall, _UnaryUnary):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.perf_counter()
        details, method, span = self.prepare(client_call_details, streaming=False)
        call = await continuation(details, request)
        return await _observe_unary(call, method, span, started)


class _UnaryStreamLayer(_ClientCall, _UnaryStream):
    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.perf_counter()
        details, method, span = self.prepare(client_call_details, streaming=True)
        call = await continuation(details, request)
        return _observe_stream(call, method, span, started)


class _StreamUnaryLayer(_ClientCall, _StreamUnary):
    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        started = time.perf_counter()
        details, method, span = self.prepare(client_call_details, streaming=False)
        call = await continuation(details, request_iterator)
        return await _observe_unary(call, method, span, started)


class _StreamStreamLayer(_ClientCall, _StreamStream):
    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        started = time.perf_counter()
        details, method, span = self.prepare(client_call_details, streaming=True)
        call = await continuation(details, request_iterator)
        return _observe_stream(call, method, span, started)


def client_interceptors(
    default_timeout: float | None, default_stream_timeout: float | None = None
) -> list[ClientInterceptor]:
    """The client layer for each call kind (unary or streaming responses get their default
    deadline: `default_timeout` / `default_stream_timeout`)."""
    args = (default_timeout, default_stream_timeout)
    return [
        _UnaryUnaryLayer(*args),
        _UnaryStreamLayer(*args),
        _StreamUnaryLayer(*args),
        _StreamStreamLayer(*args),
    ]
