"""grpc.aio interceptors: request context, metrics and error mapping, server and client side.

Server order (outermost first, see server.py): OpenTelemetry -> `RequestContextInterceptor` ->
`MetricsInterceptor` -> `ErrorMappingInterceptor` -> servicer. Each server interceptor wraps the
method handler's behavior in one `around()` async context manager, so the same code serves
unary and streaming methods.

Client order (see client.py): `OutgoingContextInterceptor` (default deadline, request id and
caller identity in metadata) -> OpenTelemetry (span + traceparent) -> `ClientMetricsInterceptor`.
grpc.aio files a client interceptor under ONE call kind, so each client interceptor is built as
one instance per kind (`*_interceptors()` functions).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    suppress,
)
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc
import structlog
from opentelemetry import trace

from aether_common import errors
from aether_common.identity import (
    AnonymousResolver,
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
# Probes and reflection calls are logged at debug only: they come every few seconds.
QUIET_SERVICE_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
GENERIC_INTERNAL_MESSAGE = "internal error"

log = get_logger(__name__)


# == server side ================================================================================
async def abort_with(context: Context, error: errors.AetherError, domain: str) -> NoReturn:
    """End the call with `error`'s status code, message and google.rpc details."""
    status = error.grpc_status(domain)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # abort always raises


def outcome_code(context: Context, exc: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, as far as an outer interceptor can tell."""
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
    if isinstance(exc, errors.AetherError):
        return exc.grpc_code
    return grpc.StatusCode.UNKNOWN  # what grpc reports for an unhandled exception


class _WrappingInterceptor(_ServerInterceptor):
    """Runs `around(method, context)` around every call of every method handler."""

    def around(self, method: str, context: Context) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return handler
        return _wrap_handler(handler, handler_call_details.method, self.around)


def _wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    method: str,
    around: Callable[[str, Context], AbstractAsyncContextManager[None]],
) -> grpc.RpcMethodHandler[Any, Any]:
    def unary(behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: Context) -> Any:
            async with around(method, context):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        return wrapped

    def stream(behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            async with around(method, context):
                result = behavior(request, context)
                if inspect.isawaitable(result):  # a servicer that uses context.write()
                    await result
                    return
                async for response in result:
                    yield response

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


def _record_server(method: str, code: grpc.StatusCode, seconds: float) -> None:
    GRPC_SERVER_HANDLED.labels(method=method, code=code.name).inc()
    GRPC_SERVER_LATENCY.labels(method=method).observe(seconds)


class RequestContextInterceptor(_WrappingInterceptor):
    """Binds the request id and the caller identity for the call, and logs one access line."""

    def __init__(self, resolver: IdentityResolver | None = None, *, domain: str = "aether") -> None:
        self._resolver: IdentityResolver = resolver or AnonymousResolver()
        self._domain = domain

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        started = time.perf_counter()
        metadata = metadata_to_dict(context.invocation_metadata())
        incoming = metadata.get(REQUEST_ID_KEY, "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        id_token = request_id_var.set(request_id)
        try:
            try:
                identity = await self._resolver.resolve(metadata)
            except Exception as exc:
                # Outside the error-mapping interceptor: map (and count) a refused caller here.
                await self._refuse(method, context, exc, started)
            span = trace.get_current_span()
            span.set_attribute("aether.request_id", request_id)
            if identity.user_id is not None:
                span.set_attribute("enduser.id", identity.user_id)
            identity_token = set_identity(identity)
            outcome: BaseException | None = None
            try:
                with structlog.contextvars.bound_contextvars(
                    grpc_method=method, user_id=identity.user_id
                ):
                    yield
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                self._access_log(method, outcome_code(context, outcome), started, identity.user_id)
                _reset(lambda: reset_identity(identity_token))
        finally:
            _reset(lambda: request_id_var.reset(id_token))

    async def _refuse(
        self, method: str, context: Context, exc: Exception, started: float
    ) -> NoReturn:
        if not isinstance(exc, errors.AetherError):
            log.exception("grpc.identity_resolver_failed", method=method)
            exc = errors.InternalError(GENERIC_INTERNAL_MESSAGE)
        self._access_log(method, exc.grpc_code, started, None)
        _record_server(method, exc.grpc_code, time.perf_counter() - started)
        await abort_with(context, exc, self._domain)

    @staticmethod
    def _access_log(
        method: str, code: grpc.StatusCode, started: float, user_id: str | None
    ) -> None:
        quiet = method.startswith(QUIET_SERVICE_PREFIXES) and code is grpc.StatusCode.OK
        (log.debug if quiet else log.info)(
            "grpc.request",
            method=method,
            code=code.name,
            user_id=user_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _reset(reset: Callable[[], None]) -> None:
    # A streaming call's generator may be finalised in another context; then nothing to undo.
    with suppress(ValueError):
        reset()


class MetricsInterceptor(_WrappingInterceptor):
    """aether_grpc_server_handled_total{method,code} and the handling-latency histogram."""

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            _record_server(method, outcome_code(context, outcome), time.perf_counter() - started)


class ErrorMappingInterceptor(_WrappingInterceptor):
    """AetherError -> its status + details; a failed downstream call keeps its meaning; anything
    else -> INTERNAL with a generic message (the real one only in the log, with traceback)."""

    def __init__(self, *, domain: str = "aether") -> None:
        self._domain = domain

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise  # the servicer aborted on purpose
        except errors.AetherError as exc:
            await abort_with(context, exc, self._domain)
        except grpc.aio.AioRpcError as exc:
            # An uncaught failure of a call this servicer made: pass on its typed error.
            log.warning("grpc.downstream_error", method=method, code=exc.code().name)
            await abort_with(context, errors.from_grpc_error(exc), self._domain)
        except Exception:
            log.exception("grpc.unhandled_error", method=method)
            await abort_with(context, errors.InternalError(GENERIC_INTERNAL_MESSAGE), self._domain)


# == client side ================================================================================
def _method_name(method: str | bytes) -> str:
    # grpc.aio hands interceptors the method as bytes (grpc/grpc#31092).
    return method.decode() if isinstance(method, bytes) else method


class _OutgoingContext:
    """Adds what every outgoing call carries: a deadline, the request id, the caller identity."""

    def __init__(self, default_timeout: float | None, default_stream_timeout: float | None) -> None:
        self._unary_timeout = default_timeout
        self._stream_timeout = default_stream_timeout

    def details(
        self, details: grpc.aio.ClientCallDetails, *, streaming: bool
    ) -> grpc.aio.ClientCallDetails:
        timeout = details.timeout
        if timeout is None:
            timeout = self._stream_timeout if streaming else self._unary_timeout
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        request_id = request_id_var.get()
        if request_id and REQUEST_ID_KEY not in metadata:
            metadata.add(REQUEST_ID_KEY, request_id)
        for key, value in identity_to_metadata(current_identity()):
            if key not in metadata:  # what the caller set explicitly wins
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


class _OutgoingUnaryUnary(_OutgoingContext, _UnaryUnary):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self.details(client_call_details, streaming=False), request)


class _OutgoingUnaryStream(_OutgoingContext, _UnaryStream):
    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self.details(client_call_details, streaming=True), request)


class _OutgoingStreamUnary(_OutgoingContext, _StreamUnary):
    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        details = self.details(client_call_details, streaming=False)
        return await continuation(details, request_iterator)


class _OutgoingStreamStream(_OutgoingContext, _StreamStream):
    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        details = self.details(client_call_details, streaming=True)
        return await continuation(details, request_iterator)


def outgoing_context_interceptors(
    default_timeout: float | None, default_stream_timeout: float | None = None
) -> list[ClientInterceptor]:
    """Default deadline (unary / streaming responses) + request id + caller identity."""
    args = (default_timeout, default_stream_timeout)
    return [
        _OutgoingUnaryUnary(*args),
        _OutgoingUnaryStream(*args),
        _OutgoingStreamUnary(*args),
        _OutgoingStreamStream(*args),
    ]


def _record_client(method: str, code: grpc.StatusCode, started: float) -> None:
    GRPC_CLIENT_HANDLED.labels(method=method, code=code.name).inc()
    GRPC_CLIENT_LATENCY.labels(method=method).observe(time.perf_counter() - started)


# No generator-based context manager here: a generator abandoned mid-call is closed by the garbage
# collector, at any allocation, and its cleanup would then record a metric while prometheus_client
# may hold the same (non-reentrant) lock on this thread: the gateway hung that way once, a
# cancelled AI stream's observation collected inside another observation's `labels()`. Plain
# try/finally in coroutines and async generators runs from the event loop instead (asyncio
# finalizes abandoned async generators in a task).
async def _observe_unary(call: Any, method: str) -> Any:
    started = time.perf_counter()
    code = grpc.StatusCode.CANCELLED
    try:
        code = await call.code()  # waits for the call; does not raise on failure
    finally:
        _record_client(method, code, started)
    return call


async def _observe_stream(call: Any, method: str) -> AsyncIterator[Any]:
    # Streams are observed by iterating them: read them with `async for`, not `call.read()`.
    started = time.perf_counter()
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
        _record_client(method, code, started)


class _MetricsUnaryUnary(_UnaryUnary):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        return await _observe_unary(call, _method_name(client_call_details.method))


class _MetricsUnaryStream(_UnaryStream):
    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        return _observe_stream(call, _method_name(client_call_details.method))


class _MetricsStreamUnary(_StreamUnary):
    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        return await _observe_unary(call, _method_name(client_call_details.method))


class _MetricsStreamStream(_StreamStream):
    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        return _observe_stream(call, _method_name(client_call_details.method))


def client_metrics_interceptors() -> list[ClientInterceptor]:
    """aether_grpc_client_handled_total{method,code} and the client latency histogram."""
    return [
        _MetricsUnaryUnary(),
        _MetricsUnaryStream(),
        _MetricsStreamUnary(),
        _MetricsStreamStream(),
    ]
