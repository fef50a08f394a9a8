"""`/api/memory/*`: each route calls one MemoryService RPC with the caller's token; memory's
errors keep their meaning (403 for another user's or a read-only namespace, 400 for bad input)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from aether.memory.v1 import memory_pb2
from aether_gateway.deps import Caller, resources_of
from aether_gateway.memory import convert
from aether_gateway.memory.client import MemoryClient, MemoryNotConfigured
from aether_gateway.memory.schemas import (
    DeleteIn,
    DeleteOut,
    SearchIn,
    SearchOut,
    UpsertIn,
    UpsertOut,
)

router = APIRouter(prefix="/api/memory", tags=["memory"])


async def get_memory(request: Request) -> MemoryClient:
    memory = resources_of(request).memory
    if memory is None:
        raise MemoryNotConfigured()
    return memory


Memory = Annotated[MemoryClient, Depends(get_memory)]


@router.post("/records", summary="Embed and store records: insert, or replace by id (Upsert)")
async def upsert(body: UpsertIn, caller: Caller, memory: Memory) -> UpsertOut:
    request = memory_pb2.UpsertRequest(
        namespace=body.namespace, records=[convert.record(r) for r in body.records]
    )
    answer = await memory.call(memory.stub.Upsert, request, token=caller.raw)
    return UpsertOut(ids=list(answer.ids), embedded=answer.embedded)


@router.post("/records/delete", summary="Delete records by id; unknown ids are no error (Delete)")
async def delete(body: DeleteIn, caller: Caller, memory: Memory) -> DeleteOut:
    request = memory_pb2.DeleteRequest(namespace=body.namespace, ids=body.ids)
    answer = await memory.call(memory.stub.Delete, request, token=caller.raw)
    return DeleteOut(deleted=answer.deleted)


@router.post("/search", summary="The records nearest to a query, best first (Search)")
async def search(body: SearchIn, caller: Caller, memory: Memory) -> SearchOut:
    answer = await memory.call(memory.stub.Search, convert.search_request(body), token=caller.raw)
    return SearchOut.model_validate({"hits": [convert.hit(h) for h in answer.hits]})
