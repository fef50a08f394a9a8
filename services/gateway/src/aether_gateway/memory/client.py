"""memory's MemoryService over one shared gRPC channel, every call made with the caller's token."""

from __future__ import annotations

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.errors import Unavailable
from aether_common.grpc import Peer, ServiceClient

MEMORY = Peer(
    "memory",
    memory_pb2.DESCRIPTOR.services_by_name["MemoryService"],
    memory_pb2_grpc.MemoryServiceStub,
    # Reads, and Delete (idempotent by contract). Upsert without ids would store twice.
    idempotent=("Search", "Delete", "Embed"),
)


class MemoryNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "memory is not configured on this gateway (AETHER_MEMORY_GRPC_TARGET)",
            code="memory_not_configured",
        )


class MemoryClient(ServiceClient["memory_pb2_grpc.MemoryServiceAsyncStub"]):
    """memory's MemoryService; every call carries the caller's token."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(MEMORY, target, timeout_s=timeout_s)
