"""The MemoryService gRPC servicer: identify the caller, open the transaction, call the service,
answer. Every RPC is "caller" (memory.proto): no verified token, no call. A datastore, the
model or chat being away answers UNAVAILABLE (retry), never INTERNAL: the index and the
embedder raise `Unavailable`, the server interceptor maps the datastores' own errors. A service
in MEMORY_DELEGATING_SERVICES (the worker) may act for a user (aether_common.delegation): the call
is then that user's, who never writes knowledge by it.
"""

from __future__ import annotations

from typing import Any

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.data_export import encode
from aether_common.grpc.interceptors import Context
from aether_common.postgres import PostgresDatabase
from aether_memory import schemas
from aether_memory.service import MemoryService

SERVICE_NAME = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name


def register(servicer: MemoryServicer, server: Any) -> None:
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, service: MemoryService, database: PostgresDatabase) -> None:
        self._service = service
        self._db = database

    async def Upsert(
        self, request: memory_pb2.UpsertRequest, context: Context
    ) -> memory_pb2.UpsertResponse:
        caller = self._service.caller()
        batch = self._service.upsert_batch(
            caller, request.namespace, schemas.record_inputs(request)
        )
        stored = await self._db.transaction(lambda uow: self._service.store(uow.conn, batch))
        return memory_pb2.UpsertResponse(ids=stored.ids, embedded=stored.embedded)

    async def Delete(
        self, request: memory_pb2.DeleteRequest, context: Context
    ) -> memory_pb2.DeleteResponse:
        caller = self._service.caller()
        ns, scope, ids = self._service.delete_target(caller, request.namespace, request.ids)
        deleted = await self._db.transaction(
            lambda uow: self._service.remove(uow.conn, ns, scope, ids, reason="request")
        )
        return memory_pb2.DeleteResponse(deleted=deleted)

    async def Search(
        self, request: memory_pb2.SearchRequest, context: Context
    ) -> memory_pb2.SearchResponse:
        caller = self._service.caller()
        found = await self._service.search(caller, schemas.search_query(request))
        return schemas.search_response(found)

    async def Embed(
        self, request: memory_pb2.EmbedRequest, context: Context
    ) -> memory_pb2.EmbedResponse:
        self._service.caller()  # any signed-in caller
        return schemas.embed_response(await self._service.embed(request.texts))

    async def ExportMyData(
        self, request: memory_pb2.ExportMyDataRequest, context: Context
    ) -> memory_pb2.ExportMyDataResponse:
        caller = self._service.caller()
        document = await self._db.transaction(
            lambda uow: self._service.export_my_data(uow.conn, caller)
        )
        return memory_pb2.ExportMyDataResponse(
            json=encode(document, max_bytes=self._service.settings.export_max_bytes)
        )

    async def RebuildIndex(
        self, request: memory_pb2.RebuildIndexRequest, context: Context
    ) -> memory_pb2.RebuildIndexResponse:
        done = await self._service.build_index(request.namespace)
        return memory_pb2.RebuildIndexResponse(
            namespace=done.namespace.value,
            engine=done.build.engine,
            points=done.build.points,
            indexed=done.build.indexed,
            built=done.build.built,
            joined=done.build.joined,
            duration_ms=done.duration_ms,
            detail=done.build.detail,
        )
