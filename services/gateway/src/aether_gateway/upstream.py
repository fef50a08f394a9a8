"""The gRPC side: one channel to auth, its stub, and failures turned into typed errors.

The channel (aether_common.grpc.create_channel) puts a deadline on every call, retries only the
read-only methods below, and forwards the request id, trace context and caller identity. Calls on
the caller's behalf also carry their token explicitly as `authorization: Bearer <jwt>`, which is
what auth verifies (the x-aether-* identity hints are for logs only).
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.errors import AetherError, Timeout, Unavailable, from_grpc_error
from aether_common.grpc import create_channel
from aether_common.identity import AUTHORIZATION_KEY
from aether_common.logging import get_logger
from aether_gateway.errors import UpstreamNotImplemented

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
# Read-only, so safe to retry when auth is briefly unreachable. Nothing that writes is retried.
IDEMPOTENT_METHODS = [
    f"{AUTH_SERVICE}/{method}"
    for method in ("GetMe", "GetJwks", "ListOAuthProviders", "ExportMyData")
]
HEALTH_TIMEOUT_S = 1.0
# Where a server's google.rpc.Status (ErrorInfo, BadRequest, RetryInfo) travels.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Req = TypeVar("Req")
Resp = TypeVar("Resp")

log = get_logger(__name__)


def upstream_error(exc: grpc.aio.AioRpcError, service: str) -> AetherError:
    """The typed error for a failed call; transport failures get a message naming the service."""
    code = exc.code()
    if code is grpc.StatusCode.UNIMPLEMENTED:  # an older auth than this gateway expects
        return UpstreamNotImplemented(f"the {service} service does not support this operation")
    # A status without error details was not raised by the service's code: gRPC itself gave up
    # (no connection, deadline passed). Say so, naming the service.
    if not _has_error_details(exc):
        if code is grpc.StatusCode.UNAVAILABLE:
            return Unavailable(
                f"the {service} service is unavailable; try again shortly", retry_after=1
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return Timeout(f"the {service} service did not answer in time")
    return from_grpc_error(exc)


def _has_error_details(exc: grpc.aio.AioRpcError) -> bool:
    # A grpc.aio.Metadata mapping at run time (the stubs say a tuple of pairs).
    metadata: Any = exc.trailing_metadata()
    return metadata is not None and STATUS_DETAILS_KEY in metadata


class ServiceClient:
    """One upstream service over one shared channel: calls with the caller's token, errors
    turned into typed ones, the standard health check. Subclasses name the service and its stub."""

    name: str
    service: str  # full gRPC service name, for the health check

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._health = health_pb2_grpc.HealthStub(channel)

    async def call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        token: str | None = None,
        deadline_s: float | None = None,
    ) -> Resp:
        """`await auth.call(auth.stub.GetMe, GetMeRequest(), token=caller.raw)`; `deadline_s`
        replaces the channel's default deadline."""
        metadata = grpc.aio.Metadata((AUTHORIZATION_KEY, f"Bearer {token}")) if token else None
        try:
            return await rpc(request, metadata=metadata, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            error = upstream_error(exc, self.name)
            if error.http_status >= 500:
                log.warning(
                    "upstream call failed",
                    service=self.name,
                    code=exc.code().name,
                    error=error.error_code,
                )
            raise error from exc

    async def healthy(self) -> bool:
        """The service's standard gRPC health check."""
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.channel.close(grace=None)


class AuthClient(ServiceClient):
    """auth's AuthService."""

    name = "auth"
    service = AUTH_SERVICE

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(channel)
        self.stub = auth_pb2_grpc.AuthServiceStub(channel)

    @classmethod
    def connect(cls, target: str, *, timeout_s: float) -> AuthClient:
        channel = create_channel(
            target, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout_s
        )
        return cls(channel)

    async def get_jwks(self) -> str:
        response = await self.call(self.stub.GetJwks, auth_pb2.GetJwksRequest())
        return response.jwks_json
