"""The gRPC server every service runs: grpc.aio, health, reflection, our call interceptor.

    server = create_server("chat", port=settings.grpc_port, identity_resolver=jwt_resolver)
    server.add_service(chat_pb2_grpc.add_ChatServiceServicer_to_server, ChatServicer(...),
                       chat_pb2.DESCRIPTOR.services_by_name["ChatService"])
    await server.start()          # a lifecycle Component: the runner starts and stops it

Health (grpc.health.v1, the library servicer) reports SERVING for "" and every added service
once started; `stop()` turns them all NOT_SERVING first, optionally waits `drain_delay` so
load balancers notice, then stops taking calls and lets in-flight ones finish within `grace`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from aether_common.grpc.interceptors import ServerCallInterceptor
from aether_common.identity import IdentityResolver
from aether_common.logging import get_logger

OVERALL = ""  # the health service's name for the server as a whole

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    # Accept the clients' keepalive pings (client.py pings every 30 s, also when idle).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Two processes silently sharing one port is a bug, not a feature.
    ("grpc.so_reuseport", 0),
)

Registrar = Callable[[Any, grpc.aio.Server], None]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Service:
    register: Registrar
    servicer: Any
    name: str


class GrpcServer:
    """A grpc.aio server as a lifecycle Component (`name`, `start`, `stop`, `ready`)."""

    name = "grpc"

    def __init__(
        self,
        service_name: str,
        *,
        port: int,
        host: str = "0.0.0.0",
        grace: float = 10.0,
        drain_delay: float = 0.0,
        identity_resolver: IdentityResolver | None = None,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ServerCredentials | None = None,
        maximum_concurrent_rpcs: int | None = None,
    ) -> None:
        self.service_name = service_name
        self.host = host
        self.grace = grace
        self.drain_delay = drain_delay
        self._requested_port = port
        self._domain = (
            service_name if service_name.startswith("aether.") else (f"aether.{service_name}")
        )
        self._resolver = identity_resolver
        self._options = {**dict(SERVER_OPTIONS), **dict(options)}
        self._credentials = credentials
        self._max_rpcs = maximum_concurrent_rpcs
        self._services: list[_Service] = []
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._port: int | None = None
        self._stopping = False

    # -- setup --------------------------------------------------------------------------------
    def add_service(
        self, register: Registrar, servicer: Any, service: str | ServiceDescriptor
    ) -> None:
        """Register a servicer with its generated `add_*Servicer_to_server` (before start)."""
        if self._server is not None:
            raise RuntimeError("add services before start()")
        name = service if isinstance(service, str) else service.full_name
        self._services.append(_Service(register, servicer, name))

    @property
    def health(self) -> Any:
        """The library HealthServicer (grpc_health.v1.health.aio.HealthServicer)."""
        return self._health

    @property
    def port(self) -> int:
        """The bound port (the real one when created with port=0)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def address(self) -> str:
        """`host:port` to dial (loopback when bound to every interface)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "[::]") else self.host
        return f"{host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("a GrpcServer starts once; create a new one")
        server = grpc.aio.server(
            interceptors=[ServerCallInterceptor(self._resolver, domain=self._domain)],
            options=list(self._options.items()),
            maximum_concurrent_rpcs=self._max_rpcs,
        )
        for service in self._services:
            service.register(service.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [service.name for service in self._services]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        address = f"{self.host}:{self._requested_port}"
        if self._credentials is not None:
            self._port = server.add_secure_port(address, self._credentials)
        else:
            self._port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        for name in [OVERALL, *names]:
            await self.set_serving(name, True)
        log.info("grpc.started", address=f"{self.host}:{self._port}", services=names)

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report `service` ("" for the whole server) SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set(service, status)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING everywhere, then stop; in-flight calls get `grace` seconds to finish."""
        server = self._server
        if server is None or self._stopping:
            return
        self._stopping = True
        await self._health.enter_graceful_shutdown()
        if self.drain_delay > 0:
            await asyncio.sleep(self.drain_delay)
        await server.stop(self.grace if grace is None else grace)
        log.info("grpc.stopped", port=self._port)

    async def ready(self) -> bool:
        return self._server is not None and not self._stopping

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def create_server(
    service_name: str,
    *,
    port: int,
    host: str = "0.0.0.0",
    grace: float = 10.0,
    drain_delay: float = 0.0,
    identity_resolver: IdentityResolver | None = None,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
    maximum_concurrent_rpcs: int | None = None,
) -> GrpcServer:
    """A `GrpcServer` for `service_name` (its errors carry domain `aether.<service_name>`).

    `port=0` binds a free port (tests); read it back from `.port` after `start()`.
    `identity_resolver` verifies callers (default: everyone anonymous).
    """
    return GrpcServer(
        service_name,
        port=port,
        host=host,
        grace=grace,
        drain_delay=drain_delay,
        identity_resolver=identity_resolver,
        options=options,
        credentials=credentials,
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
