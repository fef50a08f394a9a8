"""The floor of a memory search (bench/memory.py starts it as its own process):

    python bench/memory_floor.py <port> <postgres dsn> <namespace>=<shard dir> ...

A bare grpc.aio MemoryService servicer that answers Search with only the work every search
must do: embed the query with the same model and the same coalescing batcher as the service,
run the same Qdrant Edge query (the caller's user filter for "memories", as the service adds it)
on a copy of the service's shard, read the hits' rows from the same PostgreSQL table with the
same query and build the same response, on uvloop as the service runs. No token, no
validation, no metrics, no logs. The caller's user id comes in the request's user_id field.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import asyncpg
import grpc
import qdrant_edge as edge
import uvloop

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.postgres import jsonb_as_objects
from aether_memory import repository
from aether_memory.embeddings import Embeddings, LocalEmbedder
from aether_memory.schemas import record_pb


class FloorServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(
        self, embeddings: Embeddings, shards: dict[str, edge.EdgeShard], pool: asyncpg.Pool
    ) -> None:
        self._embeddings = embeddings
        self._shards = shards
        self._pool = pool

    async def Search(
        self, request: memory_pb2.SearchRequest, context: Any
    ) -> memory_pb2.SearchResponse:
        vector = (await self._embeddings.embed([request.query]))[0]
        only_user = None
        if request.namespace == "memories":
            only_user = edge.Filter(
                must=[
                    edge.FieldCondition(key="user_id", match=edge.MatchValue(value=request.user_id))
                ]
            )
        found = self._shards[request.namespace].query(
            edge.QueryRequest(
                limit=request.limit or 5,
                query=edge.Query.Nearest(vector.tolist()),
                filter=only_user,
                with_payload=False,
            )
        )
        point_ids = [uuid.UUID(str(point.id)) for point in found]
        async with self._pool.acquire() as conn:
            rows = await repository.by_points(conn, request.namespace, point_ids)
        return memory_pb2.SearchResponse(
            hits=[
                memory_pb2.SearchHit(record=record_pb(rows[p]), score=point.score)
                for p, point in zip(point_ids, found, strict=True)
                if p in rows
            ]
        )


async def serve(port: int, dsn: str, shard_dirs: dict[str, str]) -> None:
    embeddings = Embeddings(LocalEmbedder(), batch_size=32, workers=1)  # the service's defaults
    await embeddings.start()
    shards = {namespace: edge.EdgeShard.load(path) for namespace, path in shard_dirs.items()}
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10, init=jsonb_as_objects)
    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(
        FloorServicer(embeddings, shards, pool),  # type: ignore[abstract]  # Search only
        server,
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    port, dsn, *pairs = sys.argv[1:]
    uvloop.run(serve(int(port), dsn, dict(pair.split("=", 1) for pair in pairs)))
