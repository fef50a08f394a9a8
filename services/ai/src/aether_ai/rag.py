"""RAG through the memory service: its gRPC Search, called with the caller's own token (the
outgoing interceptor forwards the identity of the RPC being served), so "memories" only ever
returns the caller's records.

The top hits become short numbered snippets for the prompt, a Sources event, and the footer
"Sources: [1] <id> [2] <id>" that the service appends to the answer itself, so the cited ids are
in every answer whatever the model writes. Memory down or slow: the answer goes on without RAG
(logged, aether_ai_rag_degraded_total), never an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_ai.config import MEMORIES
from aether_ai.metrics import RAG_DEGRADED, RAG_RETRIEVAL
from aether_common.errors import AetherError
from aether_common.grpc import Peer, ServiceClient
from aether_common.logging import get_logger

MEMORY = Peer(
    "memory",
    memory_pb2.DESCRIPTOR.services_by_name["MemoryService"],
    memory_pb2_grpc.MemoryServiceStub,
    idempotent=("Search",),
)
MAX_QUERY_CHARS = 2000  # memory.proto's limit

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Snippet:
    n: int
    id: str
    namespace: str
    score: float
    text: str


@dataclass(frozen=True, slots=True)
class Retrieval:
    snippets: tuple[Snippet, ...]
    # The prompt holds the caller's own records ("memories" searched): never a shared cache key.
    personal: bool

    def context(self) -> list[str]:
        """What of the retrieval shapes the answer (for the cache key)."""
        return [f"{s.namespace}/{s.id}\n{s.text}" for s in self.snippets]


NO_RETRIEVAL = Retrieval((), personal=False)


def footer(snippets: Sequence[Snippet]) -> str:
    if not snippets:
        return ""
    return "\n\nSources: " + " ".join(f"[{s.n}] {s.id}" for s in snippets)


def shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class MemoryClient(ServiceClient["memory_pb2_grpc.MemoryServiceAsyncStub"]):
    """Component: the channel to the memory service (never blocks readiness: RAG degrades)."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(MEMORY, target, timeout_s=timeout_s, needs_peer=False)

    async def search(
        self, namespace: str, query: str, *, limit: int, min_score: float = 0.0
    ) -> list[memory_pb2.SearchHit]:
        """Hits best first; the memory service's typed error when it refuses or is away."""
        request = memory_pb2.SearchRequest(
            namespace=namespace,
            query=query[:MAX_QUERY_CHARS],
            limit=limit,
            min_score=min_score,
        )
        response = await self.call(self.stub.Search, request)
        return list(response.hits)


class Retriever:
    def __init__(
        self, memory: MemoryClient, *, limit: int, snippet_chars: int, min_score: float
    ) -> None:
        self._memory = memory
        self.limit = limit
        self.snippet_chars = snippet_chars
        self.min_score = min_score

    async def retrieve(self, query: str, namespaces: Sequence[str]) -> Retrieval:
        """The best `limit` snippets over `namespaces`, numbered from 1; none when memory fails."""
        personal = MEMORIES in namespaces
        if not namespaces:
            return NO_RETRIEVAL
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                self._memory.search(namespace, query, limit=self.limit, min_score=self.min_score)
                for namespace in namespaces
            ),
            return_exceptions=True,
        )
        found: list[tuple[float, str, memory_pb2.SearchHit]] = []
        for namespace, result in zip(namespaces, results, strict=True):
            if isinstance(result, AetherError):
                # Memory down, slow or refusing: this namespace adds nothing to the prompt.
                RAG_DEGRADED.labels(result.error_code).inc()
                log.warning(
                    "memory search failed; answering without it",
                    namespace=namespace,
                    error=result.error_code,
                    detail=result.detail,
                )
            elif isinstance(result, BaseException):
                raise result
            else:
                found += [(hit.score, namespace, hit) for hit in result]
        RAG_RETRIEVAL.observe(time.perf_counter() - started)
        ranked = sorted(found, key=lambda item: -item[0])[: self.limit]
        snippets = tuple(
            Snippet(
                n=index,
                id=hit.record.id,
                namespace=namespace,
                score=round(float(score), 4),
                text=shorten(hit.record.text, self.snippet_chars),
            )
            for index, (score, namespace, hit) in enumerate(ranked, start=1)
        )
        return Retrieval(snippets, personal=personal)
