"""gRPC for Aether services: a server factory and a client channel factory.

Note: inside this package, `import grpc` is the grpcio library (absolute imports).
"""

from aether_common.grpc.client import (
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    checked,
    create_channel,
    rpc_errors,
)
from aether_common.grpc.interceptors import REQUEST_ID_KEY
from aether_common.grpc.server import GrpcServer, create_server

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "REQUEST_ID_KEY",
    "GrpcServer",
    "RetryPolicy",
    "checked",
    "create_channel",
    "create_server",
    "rpc_errors",
]
