"""Index rebuilds (docs/reindex.md): the `memory.reindex` job type, operators only.

Memory builds its own search index (RebuildIndex: Qdrant Edge's build on a copy swapped in, or
a Qdrant server's optimizer); the worker only asks, as itself (its service token), one
namespace at a time, and tracks the answers. It never touches memory's index or database.

    memory = MemoryIndexClient(settings.memory_grpc_target)
    job_type = memory_reindex_type(memory, token=credentials.token)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.errors import AetherError, Timeout, Unavailable
from aether_common.grpc import Peer, ServiceClient
from aether_worker.handler import JobContext, JobFailed, JobType

TYPE_NAME = "memory.reindex"
# One build of a namespace: minutes at 100k points (a build in memory's child process).
REINDEX_DEADLINE_S = 1800.0

TokenSource = Callable[[], Awaitable[str]]


class MemoryNamespace(StrEnum):
    """Memory's namespaces (aether_memory.namespaces.Namespace), and `all` of them."""

    MEMORIES = "memories"
    KNOWLEDGE = "knowledge"
    CHAT = "chat"
    ALL = "all"


NAMESPACES = (MemoryNamespace.MEMORIES, MemoryNamespace.KNOWLEDGE, MemoryNamespace.CHAT)


class ReindexParams(BaseModel):
    """`{"namespace": "memories" | "knowledge" | "chat" | "all"}`."""

    model_config = ConfigDict(extra="forbid")

    namespace: MemoryNamespace

    def namespaces(self) -> tuple[MemoryNamespace, ...]:
        return NAMESPACES if self.namespace is MemoryNamespace.ALL else (self.namespace,)


class IndexBuilder(Protocol):
    """One namespace's index built by memory, as the job sees it."""

    async def rebuild(self, namespace: str, *, token: str) -> dict[str, Any]: ...


MEMORY = Peer(
    "memory",
    memory_pb2.DESCRIPTOR.services_by_name["MemoryService"],
    memory_pb2_grpc.MemoryServiceStub,
    # A repeated call joins the build running or starts another: safe to retry.
    idempotent=("RebuildIndex",),
)


class MemoryIndexClient(ServiceClient["memory_pb2_grpc.MemoryServiceAsyncStub"]):
    """Component: the channel to memory for RebuildIndex. Readiness does not wait on memory:
    only reindex jobs need it, and they retry while it is away."""

    def __init__(self, target: str, *, timeout_s: float = REINDEX_DEADLINE_S) -> None:
        super().__init__(MEMORY, target, timeout_s=timeout_s, needs_peer=False, name="memory-index")

    async def rebuild(self, namespace: str, *, token: str) -> dict[str, Any]:
        request = memory_pb2.RebuildIndexRequest(namespace=namespace)
        answer = await self.call(self.stub.RebuildIndex, request, token=token)
        return {
            "engine": answer.engine,
            "points": answer.points,
            "indexed": answer.indexed,
            "built": answer.built,
            "joined": answer.joined,
            "duration_ms": answer.duration_ms,
            "detail": answer.detail,
        }


def memory_reindex_type(memory: IndexBuilder, *, token: TokenSource | None) -> JobType:
    """The `memory.reindex` job type (operators only): asks memory to build each named
    namespace's index now, as the worker (`token`: its service token; None when the worker has
    no identity, and every such job fails). The result: memory's answer per namespace. Memory
    away or slow: a retryable failure (a rebuild is idempotent; a retry joins a build still
    running). A refusal (permissions, an unknown namespace): not retryable."""

    async def run(ctx: JobContext, params: ReindexParams) -> dict[str, Any]:
        if token is None:
            raise JobFailed(
                "no_service_identity",
                "WORKER_AUTH_CLIENT_SECRET is unset: the worker cannot call as itself",
                retryable=False,
            )
        namespaces = params.namespaces()
        answers: dict[str, dict[str, Any]] = {}
        for done, namespace in enumerate(namespaces):
            await ctx.progress(done * 100 // len(namespaces), f"building {namespace.value}'s index")
            try:
                answers[namespace.value] = await memory.rebuild(
                    namespace.value, token=await token()
                )
            except (Unavailable, Timeout) as exc:
                raise JobFailed("memory_unavailable", exc.detail) from exc
            except AetherError as exc:
                raise JobFailed(exc.error_code, exc.detail, retryable=False) from exc
        await ctx.progress(100, f"{len(answers)} namespace(s) done")
        return {"namespaces": answers}

    return JobType(
        name=TYPE_NAME,
        params=ReindexParams,
        run=run,
        user_may_submit=False,
        max_attempts=5,
        # Memory serialises builds per namespace itself; one job at a time is plenty.
        concurrency=1,
        timeout_s=REINDEX_DEADLINE_S * len(NAMESPACES) + 60,
    )
