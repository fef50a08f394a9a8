"""memory's MemoryService over one shared gRPC channel, every call made with the caller's token."""

from __future__ import annotations

import grpc

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.errors import Unavailable
from aether_common.grpc import create_channel
from aether_gateway.upstream import ServiceClient

MEMORY_SERVICE = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name
# Reads, and Delete (idempotent by contract). Upsert without ids would store twice.
IDEMPOTENT_METHODS = [f"{MEMORY_SERVICE}/{method}" for method in ("Search", "Delete", "Embed")]


class MemoryNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "memory is not configured on this gateway (AETHER_MEMORY_GRPC_TARGET)",
            code="memory_not_configured",
        )


class MemoryClient(ServiceClient):
    """memory's MemoryService; every call carries the caller's token."""

    name = "memory"
    service = MEMORY_SERVICE

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(channel)
        self.stub = memory_pb2_grpc.MemoryServiceStub(channel)

    @classmethod
    def connect(cls, target: str, *, timeout_s: float) -> MemoryClient:
        channel = create_channel(
            target, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout_s
        )
        return cls(channel)
