"""`ServiceClient`: the one way a service (or the gateway) calls another service over gRPC.

    AUTH = Peer("auth", auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
                auth_pb2_grpc.AuthServiceStub, idempotent=("GetJwks",))
    auth = ServiceClient(AUTH, "auth:4001", timeout_s=5)
    await auth.start()                        # a lifecycle Component: the runner starts it
    reply = await auth.call(auth.stub.GetJwks, auth_pb2.GetJwksRequest())

`Peer` is what a caller knows of a service whatever its address: its name, its descriptor, its
stub class and which of its methods are safe to retry. The address and deadlines are settings.

It holds one channel (`create_channel`: retries for the idempotent methods only, keepalive) and
the stub, typed as the stub class's async stub, and prepares each call itself (a default
deadline; the caller identity, request id and trace context forwarded; metrics and a span), on
a channel without interceptors: grpc.aio runs an intercepted call as one more task, a
measurable share of a request's CPU (bench/auth.py). Every failure leaves `call` and `stream`
as the typed error of aether_common.errors (`peer_error`: what the peer raised, or Unavailable
with Retry-After / Timeout naming the peer when gRPC itself gave up). `ready()` is the peer's
standard health check, unless the owner serves without the peer (`needs_peer=False`: answers go
on without RAG, cached keys keep verifying tokens); then it only says the channel is open, so
one service being down does not take its callers out of their load balancers.

A client of one service subclasses it to name its calls (`AuthJwks.fetch`, `AiClient.whole`),
or adds hints to its errors by overriding `error()`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_common.errors import AetherError
from aether_common.grpc.client import create_channel, peer_error
from aether_common.grpc.interceptors import outgoing, record_client
from aether_common.identity import AUTHORIZATION_KEY
from aether_common.logging import get_logger

StubT = TypeVar("StubT")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

HEALTH_TIMEOUT_S = 1.0

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Peer(Generic[StubT]):
    """A service as its callers know it: `name` in errors and logs ("auth"), its descriptor
    (`<x>_pb2.DESCRIPTOR.services_by_name[...]`), its stub class, and `idempotent`: the methods
    safe to retry (a retried write could apply twice)."""

    name: str
    service: ServiceDescriptor
    stub: Callable[[grpc.aio.Channel], StubT]
    idempotent: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.idempotent) - set(self.service.methods_by_name))
        if unknown:  # a misspelt name would silently turn its retries off
            raise ValueError(f"{self.service.full_name} has no method {', '.join(unknown)}")

    @property
    def idempotent_methods(self) -> list[str]:
        return [f"{self.service.full_name}/{method}" for method in self.idempotent]


class ServiceClient(Generic[StubT]):
    """Component: one channel to `peer` at `target`, its typed stub, calls with typed errors."""

    def __init__(
        self,
        peer: Peer[StubT],
        target: str,
        *,
        timeout_s: float,
        stream_timeout_s: float | None = None,
        needs_peer: bool = True,
        name: str | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`timeout_s`: the deadline of a unary call that sets none (`stream_timeout_s`: of a
        stream); `needs_peer=False`: ready() does not wait on the peer; `name`: the component's,
        default the peer's; `channel_options`: grpc channel arguments over ours (e.g. a larger
        `grpc.max_receive_message_length` for a peer whose answers pass gRPC's 4 MiB)."""
        self.peer = peer
        self.name = name or peer.name
        self.target = target
        self.service = peer.service.full_name
        self.timeout_s = timeout_s
        self.stream_timeout_s = stream_timeout_s
        self.needs_peer = needs_peer
        self._channel_options = tuple(channel_options)
        self._channel: grpc.aio.Channel | None = None
        self._stub: StubT | None = None
        self._health: health_pb2_grpc.HealthStub | None = None
        # The full method name of each of the stub's callables (metrics, spans).
        self._methods: dict[int, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the channel (inside a running event loop). It connects lazily: nothing waits on
        the peer being up. `start()` does this for the runner."""
        if self._channel is not None:
            return
        channel = create_channel(
            self.target,
            idempotent_methods=self.peer.idempotent_methods,
            layered=False,
            options=self._channel_options,
        )
        stub = self.peer.stub(channel)
        self._methods = {
            id(callable_): f"/{self.service}/{method.name}"
            for method in self.peer.service.methods
            if (callable_ := getattr(stub, method.name, None)) is not None
        }
        self._channel, self._stub = channel, stub
        self._health = health_pb2_grpc.HealthStub(channel)

    async def start(self) -> None:
        self.open()

    async def stop(self) -> None:
        channel, self._channel, self._stub, self._health = self._channel, None, None, None
        if channel is not None:
            await channel.close(grace=None)

    async def ready(self) -> bool:
        """The peer serves (its health check), or only the channel is open (`needs_peer=False`)."""
        if not self.needs_peer:
            return self._channel is not None
        return await self.healthy()

    async def healthy(self) -> bool:
        """The peer's standard gRPC health check for its service; never raises."""
        if self._health is None:
            return False
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    # -- calls -------------------------------------------------------------------------------------
    @property
    def stub(self) -> StubT:
        if self._stub is None:
            raise RuntimeError(f"{self.peer.name} channel not started")
        return self._stub

    async def call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        token: str | None = None,
        deadline_s: float | None = None,
    ) -> Resp:
        """`await auth.call(auth.stub.GetMe, GetMeRequest(), token=caller.raw)`: the response or
        the typed error. `token` is sent as `authorization: Bearer <token>` (else the identity of
        the call being served is forwarded); `deadline_s` replaces the default deadline."""
        method = self._method(rpc)
        started = time.perf_counter()
        metadata = _bearer(token)
        span = outgoing(method, metadata)
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise
        try:
            response = await rpc(
                request,
                metadata=metadata,
                timeout=self.timeout_s if deadline_s is None else deadline_s,
            )
            code = grpc.StatusCode.OK
            return response
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise self._failed(exc, "call") from exc
        finally:
            record_client(method, code, started, span)

    async def stream(
        self,
        rpc: grpc.aio.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        *,
        token: str | None = None,
    ) -> AsyncGenerator[Resp, None]:
        """A server stream's responses; a failure raises the typed error. Closing the iterator
        (or cancelling its reader) cancels the call, so the peer stops its work at once."""
        method = self._method(rpc)
        started = time.perf_counter()
        metadata = _bearer(token)
        span = outgoing(method, metadata)
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise
        call = rpc(request, metadata=metadata, timeout=self.stream_timeout_s)
        try:
            async for response in call:
                yield response
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise self._failed(exc, "stream") from exc
        finally:
            call.cancel()  # a no-op once the call has ended
            record_client(method, code, started, span)

    def _method(self, rpc: Any) -> str:
        return self._methods.get(id(rpc)) or f"/{self.service}/unknown"

    def error(self, exc: grpc.aio.AioRpcError) -> AetherError:
        """The typed error for a failed call; a subclass may add hints (a Retry-After)."""
        return peer_error(exc, self.peer.name)

    def _failed(self, exc: grpc.aio.AioRpcError, kind: str) -> AetherError:
        error = self.error(exc)
        if error.http_status >= 500:
            log.warning(
                f"upstream {kind} failed",
                service=self.peer.name,
                code=exc.code().name,
                error=error.error_code,
            )
        return error


def _bearer(token: str | None) -> grpc.aio.Metadata:
    return (
        grpc.aio.Metadata((AUTHORIZATION_KEY, f"Bearer {token}")) if token else grpc.aio.Metadata()
    )
