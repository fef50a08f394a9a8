"""The MemoryService gRPC servicer: identify the caller, open the transaction, call the service,
answer. Every RPC is "caller" (memory.proto): no verified token, no call. A datastore, the
model or chat being away answers UNAVAILABLE (retry), never INTERNAL.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.errors import AetherError, Unavailable
from aether_common.grpc.interceptors import Context
from aether_common.logging import get_logger
from aether_memory.db import Database
from aether_memory.outages import OUTAGES
from aether_memory.service import MemoryService

SERVICE_NAME = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name

log = get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, Context], Awaitable[Resp]]


def _rpc(method: Method[Req, Resp]) -> Method[Req, Resp]:
    @functools.wraps(method)
    async def wrapped(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except AetherError:
            raise
        except OUTAGES as exc:
            log.warning("dependency outage", error=repr(exc))
            raise Unavailable("a dependency of the memory service is unavailable; retry") from exc

    return wrapped


def register(servicer: MemoryServicer, server: Any) -> None:
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, service: MemoryService, database: Database) -> None:
        self._service = service
        self._db = database

    @_rpc
    async def Upsert(
        self, request: memory_pb2.UpsertRequest, context: Context
    ) -> memory_pb2.UpsertResponse:
        caller = self._service.caller()
        batch = self._service.upsert_batch(caller, request)
        async with self._db.transaction() as conn:
            stored = await self._service.store(conn, batch)
        return memory_pb2.UpsertResponse(ids=stored.ids, embedded=stored.embedded)

    @_rpc
    async def Delete(
        self, request: memory_pb2.DeleteRequest, context: Context
    ) -> memory_pb2.DeleteResponse:
        caller = self._service.caller()
        ns, scope, ids = self._service.delete_target(caller, request)
        async with self._db.transaction() as conn:
            deleted = await self._service.remove(conn, ns, scope, ids, reason="request")
        return memory_pb2.DeleteResponse(deleted=deleted)

    @_rpc
    async def Search(
        self, request: memory_pb2.SearchRequest, context: Context
    ) -> memory_pb2.SearchResponse:
        caller = self._service.caller()
        return await self._service.search(caller, request)

    @_rpc
    async def Embed(
        self, request: memory_pb2.EmbedRequest, context: Context
    ) -> memory_pb2.EmbedResponse:
        self._service.caller()  # any signed-in caller
        return await self._service.embed(request)
