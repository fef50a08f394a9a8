"""gRPC for Aether services: a server factory, a client channel factory and the client component.

Note: inside this package, `import grpc` is the grpcio library (absolute imports).
"""

from aether_common.grpc.client import (
    DEFAULT_TIMEOUT_S,
    PeerNotImplemented,
    RetryPolicy,
    checked,
    create_channel,
    peer_error,
    rpc_errors,
)
from aether_common.grpc.interceptors import REQUEST_ID_KEY
from aether_common.grpc.server import GrpcServer, create_server
from aether_common.grpc.service_client import Peer, ServiceClient

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "REQUEST_ID_KEY",
    "GrpcServer",
    "Peer",
    "PeerNotImplemented",
    "RetryPolicy",
    "ServiceClient",
    "checked",
    "create_channel",
    "create_server",
    "peer_error",
    "rpc_errors",
]
