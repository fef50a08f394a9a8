"""auth's AuthService as the gateway calls it: an aether_common.grpc.ServiceClient.

The client puts a deadline on every call, retries only the read-only methods below, forwards
the request id, trace context and caller identity, and turns failures into typed errors. Calls
on the caller's behalf also carry their token explicitly as `authorization: Bearer <jwt>`,
which is what auth verifies (the x-aether-* identity hints are for logs only).
"""

from __future__ import annotations

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.grpc import Peer, ServiceClient

AUTH = Peer(
    "auth",
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    auth_pb2_grpc.AuthServiceStub,
    # Read-only, so safe to retry when auth is briefly unreachable. Nothing that writes is.
    idempotent=("GetMe", "GetJwks", "ListOAuthProviders", "ExportMyData"),
)


class AuthClient(ServiceClient["auth_pb2_grpc.AuthServiceAsyncStub"]):
    """auth's AuthService."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(AUTH, target, timeout_s=timeout_s)

    async def get_jwks(self) -> str:
        response = await self.call(self.stub.GetJwks, auth_pb2.GetJwksRequest())
        jwks: str = response.jwks_json
        return jwks
