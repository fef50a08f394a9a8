"""Benchmark: the memory service's search on its embedded engine, Qdrant Edge, beside its floor.

    uv run python bench/memory.py [--vectors N] [--searches N] [--concurrency C]
        [--rss-vectors N]                                                  (make bench-memory)

Starts the backing servers and auth, chat, memory, ai and the gateway as their own processes
(bench/ai.py's Platform), then restarts memory with --vectors records (default 100,000) written
straight into its PostgreSQL table and its Edge shards, in "memories" (1,000 owners, the bench
user one of them) and in "knowledge". Their vectors are the model's embeddings of 1,000
sentences, each with noise added (embedding 100k texts would take minutes and measure the model,
not search). On that start memory finds them outside any HNSW index and builds its indexes
itself, as in production (a copy optimized in a child process, then swapped in). Measured, in
one run:

1. The build: memory's own build seconds per namespace, and search p95 through memory's gRPC
   while it runs beside after it.
2. Search through memory's gRPC with the bench user's token: one client sequentially (p50/p95)
   and searches/s at --concurrency, in "memories" (the caller's user filter, as every memory
   search) and "knowledge" (no filter). Beside each, the floor: bench/memory_floor.py, its own
   process, the same model and batching, the same Edge query on a copy of the built shards, the
   same PostgreSQL read. Goal: the service >= 0.7 of the floor's rate at the same concurrency.
3. Through the gateway (POST /api/memory/search, "memories"): one client sequentially. Goal:
   p95 < 20 ms.
4. The AI service's RAG step: POST /api/ai/chat in mode trade_buddy ("memories" and
   "knowledge", 4 tokens per answer), p95 of ai's own aether_ai_rag_retrieval_seconds (the
   query to its retrieved context), interpolated in its buckets as Prometheus does.
5. RSS of a process holding an Edge shard of --vectors and of --rss-vectors (default 1,000,000)
   raw vectors, upserted, unbuilt; the --vectors one also after its build.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from aether_devstack.catalog import database_url
from aether_devstack.servers import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ai import Platform, sentences, summary
from chat import RawHttp, checked, new_user, percentile

USERS = 1000
NAMESPACES = ("memories", "knowledge")
GOAL_RATE_RATIO = 0.7
GOAL_GATEWAY_P95_MS = 20.0
HERE = Path(__file__).resolve().parent


# -- loading -------------------------------------------------------------------------------------
def corpus_vectors(count: int, base: np.ndarray, seed: int) -> np.ndarray:
    """`count` unit vectors near the rows of `base` (the model's embeddings of sentences)."""
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, len(base), count)]
    noisy = rows + rng.standard_normal(rows.shape).astype(np.float32) * 0.04
    unit: np.ndarray = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return unit


async def load(dsn: str, location: str, count: int, owner: str, base: np.ndarray) -> None:
    """Rows into memory_records and points into the Edge shards, as the service writes them."""
    from aether_memory import repository
    from aether_memory.edge_index import EdgeIndex
    from aether_memory.index import Point

    index = EdgeIndex(location, prefix="memory_", namespaces=NAMESPACES, dimensions=384)
    await index.start()
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    try:
        texts = sentences(count)
        for seed, namespace in enumerate(NAMESPACES):
            vectors = corpus_vectors(count, base, seed)
            for start in range(0, count, 5000):
                rows, points = [], []
                for n in range(start, min(start + 5000, count)):
                    user = owner if n % USERS == 0 else f"user-{n % USERS}"
                    scope = user if namespace == "memories" else ""
                    record_id = f"r{n}"
                    text = texts[n]
                    point_id = repository.point_id(namespace, scope, record_id)
                    rows.append(
                        (
                            namespace,
                            scope,
                            record_id,
                            point_id,
                            user,
                            "",
                            text,
                            repository.text_digest(text),
                            "{}",
                            now,
                            now,
                        )
                    )
                    points.append(Point(point_id, user, "", now))
                await conn.copy_records_to_table(
                    "memory_records",
                    records=rows,
                    columns=[
                        "namespace",
                        "owner_scope",
                        "id",
                        "point_id",
                        "user_id",
                        "room_id",
                        "text",
                        "text_sha256",
                        "metadata",
                        "created_at",
                        "updated_at",
                    ],
                )
                await index.upsert(namespace, points, vectors[start : start + len(points)])
    finally:
        await conn.close()
        await index.stop()


# -- searching -----------------------------------------------------------------------------------
Search = Callable[[str, str], Awaitable[Any]]


def grpc_search(target: str, token: str, *, as_user: str = "") -> tuple[Any, Search]:
    """A channel and `search(namespace, query)` through memory's gRPC (the floor: `as_user`)."""
    from aether.memory.v1 import memory_pb2, memory_pb2_grpc
    from aether_common.grpc import create_channel

    channel = create_channel(target, default_timeout=30)
    stub: Any = memory_pb2_grpc.MemoryServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)

    async def search(namespace: str, query: str) -> Any:
        request = memory_pb2.SearchRequest(
            namespace=namespace, query=query, limit=5, user_id=as_user
        )
        response = await stub.Search(request, metadata=metadata)
        assert response.hits, f"no hits in {namespace}"
        return response

    return channel, search


async def sequential(search: Search, namespace: str, queries: list[str]) -> list[float]:
    latencies = []
    for query in queries:
        started = time.perf_counter()
        await search(namespace, query)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def rate(search: Search, namespace: str, queries: list[str], concurrency: int) -> float:
    """Searches/s with `concurrency` clients each searching back to back."""
    per_client = max(1, len(queries) // concurrency)

    async def client(n: int) -> None:
        for query in queries[n * per_client : (n + 1) * per_client]:
            await search(namespace, query)

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return per_client * concurrency / (time.perf_counter() - started)


# -- memory's and ai's own metrics ---------------------------------------------------------------
def samples(metrics: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name
    ]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


RSS_PROBE = """
import sys, time, numpy as np, qdrant_edge as edge
path, count, build = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "build"
shard = edge.EdgeShard.create(path, edge.EdgeConfig(
    vectors={"": edge.EdgeVectorParams(size=384, distance=edge.Distance.Cosine)}))
shard.update(edge.UpdateOperation.create_field_index("user_id", edge.PayloadSchemaType.Keyword))
rng = np.random.default_rng(1)
started = time.perf_counter()
for start in range(0, count, 10_000):
    rows = rng.standard_normal((10_000, 384)).astype(np.float32)
    shard.update(edge.UpdateOperation.upsert_points([
        edge.Point(start + n + 1, row.tolist(), {"user_id": f"u{(start + n) % 1000}"})
        for n, row in enumerate(rows)]))
shard.flush()
print("loaded", round(time.perf_counter() - started, 1), flush=True)
if build:
    started = time.perf_counter()
    shard.optimize()
    print("built", round(time.perf_counter() - started, 1), flush=True)
sys.stdin.readline()
"""


def probe_rss(directory: Path, count: int, build: bool) -> str:
    """RSS of a fresh process holding a shard of `count` raw vectors (and its build time)."""
    shutil.rmtree(directory, ignore_errors=True)
    probe = subprocess.Popen(
        [sys.executable, "-c", RSS_PROBE, str(directory), str(count), "build" if build else "raw"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None
    assert probe.stdin is not None
    notes = [probe.stdout.readline().strip() for _ in range(2 if build else 1)]
    rss = rss_mib(probe.pid)
    probe.stdin.write("\n")
    probe.stdin.flush()
    probe.wait()
    shutil.rmtree(directory, ignore_errors=True)
    return f"{count:>9,} vectors: RSS {rss:,.0f} MiB ({', '.join(notes)} s)"


# -- the run -------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> None:
    print(f"cores: {os.cpu_count()}, shared by the servers, the services and this process")
    platform = Platform()
    floor: subprocess.Popen[str] | None = None
    try:
        await asyncio.to_thread(
            platform.start,
            4,
            {"trade_buddy": {"max_tokens": 4, "temperature": 0}},
            # builds as soon as the loaded records are seen (the default: after 20,000)
            {"MEMORY_EDGE_INDEX_AFTER": str(min(args.vectors, 20_000)), "MEMORY_EDGE_CHECK_S": "1"},
        )
        fleet = platform._fleet
        base_url = platform.gateway_url
        token = await new_user(RawHttp(base_url), "memory")
        me = (await checked(RawHttp(base_url), "GET", "/api/auth/me", None, token))["id"]
        memory_dsn = database_url(fleet.endpoints, fleet.spec("memory").postgres_databases[0])
        location = fleet.endpoints.qdrant_location

        from aether_memory.embeddings import LocalEmbedder

        embedder = LocalEmbedder()
        base = await embedder.embed(sentences(1000))
        started = time.perf_counter()
        await asyncio.to_thread(
            fleet.restart,
            "memory",
            lambda: asyncio.run(load(memory_dsn, location, args.vectors, me, base)),
        )
        print(
            f"loaded {args.vectors:,} records into each of {', '.join(NAMESPACES)} (PostgreSQL "
            f"COPY + Edge upserts, memory restarted): {time.perf_counter() - started:.1f} s"
        )

        target = fleet.grpc_target("memory")
        channel, search = grpc_search(target, token)
        queries = sentences(args.searches * 3)[args.searches :]
        # 1. the service builds its indexes; searches meanwhile, then after.
        during: list[float] = []
        build_s = await wait_for_builds(fleet.http_url("memory"), search, queries, during)
        print(f"index build by memory itself: {build_s}")
        print(f"  search through gRPC while it built (memories): {summary(during)}")

        # 2. the service beside its floor
        floor_dir = Path(location).parent / "floor"
        shards = {}
        for namespace in NAMESPACES:
            root = Path(location) / f"memory_{namespace}"
            live = root / (root / "CURRENT").read_text().strip()
            shutil.copytree(live, floor_dir / namespace)
            shards[namespace] = str(floor_dir / namespace)
        floor_port = free_port()
        floor = subprocess.Popen(  # noqa: ASYNC220  (once, before anything is measured)
            [sys.executable, str(HERE / "memory_floor.py"), str(floor_port), memory_dsn]
            + [f"{ns}={path}" for ns, path in shards.items()],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert floor.stdout is not None
        assert floor.stdout.readline().strip() == "ready"
        floor_channel, floor_search = grpc_search(f"127.0.0.1:{floor_port}", "", as_user=me)
        for namespace in NAMESPACES:
            label = "user filter" if namespace == "memories" else "no filter"
            print(f"search over {args.vectors:,} vectors, {namespace} ({label}), top 5:")
            for name, fn in (("memory", search), ("floor", floor_search)):
                await sequential(fn, namespace, queries[:20])  # warm
                one = await sequential(fn, namespace, queries[: args.searches])
                print(f"  {name:6} one client: {summary(one)}")
            rates = {}
            for name, fn in (("memory", search), ("floor", floor_search), ("memory ", search)):
                rates[name] = await rate(fn, namespace, queries, args.concurrency)
            service = (rates["memory"] + rates["memory "]) / 2
            ratio = service / rates["floor"]
            verdict = "ok" if ratio >= GOAL_RATE_RATIO else "MISSED"
            print(
                f"  {args.concurrency} clients: memory {service:.0f}/s (runs "
                f"{rates['memory']:.0f}, {rates['memory ']:.0f}), floor {rates['floor']:.0f}/s: "
                f"ratio {ratio:.2f} "
                f"(goal >= {GOAL_RATE_RATIO}: {verdict})"
            )
        await floor_channel.close()
        floor.terminate()
        floor.wait()
        floor = None
        await channel.close()

        # 3. through the gateway (RawHttp: httpx alone costs milliseconds per request here)
        http = RawHttp(base_url)

        async def gateway_search(namespace: str, query: str) -> Any:
            body = {"namespace": namespace, "query": query, "limit": 5, "min_score": -1}
            status, answer = await http.request("POST", "/api/memory/search", body, token)
            assert status == 200, answer
            assert answer["hits"], answer
            return answer

        await sequential(gateway_search, "memories", queries[:20])
        through = await sequential(gateway_search, "memories", queries[: args.searches])
        p95 = percentile(sorted(through), 0.95)
        verdict = "ok" if p95 < GOAL_GATEWAY_P95_MS else "MISSED"
        print(
            f"through the gateway (memories, user filter), one client: {summary(through)}; "
            f"goal p95 < {GOAL_GATEWAY_P95_MS:.0f} ms: {verdict}"
        )

        # 4. ai's RAG step
        for n in range(args.rag):
            body = {"message": f"{queries[n]} ({n})", "mode": "trade_buddy", "no_cache": True}
            await checked(http, "POST", "/api/ai/chat", body, token)
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(fleet.http_url("ai") + "/metrics")).text
        buckets = [
            (float(labels["le"]), value)
            for labels, value in samples(metrics, "aether_ai_rag_retrieval_seconds_bucket")
        ]
        print(
            f"ai's RAG step over {args.vectors:,} records (memories + knowledge, {args.rag} "
            f"answers): p50 {histogram_quantile(buckets, 0.5) * 1000:.1f} ms, p95 "
            f"{histogram_quantile(buckets, 0.95) * 1000:.1f} ms (ai's histogram)"
        )
    finally:
        if floor is not None:
            floor.kill()
        await asyncio.to_thread(platform.stop)

    # 5. memory use of the engine
    scratch = Path(tempfile.mkdtemp(prefix="aether-bench-rss-")) / "shard"
    print("Edge shard in a fresh process (384-dim, a keyword payload index):")
    print("  " + await asyncio.to_thread(probe_rss, scratch, args.vectors, False))
    print("  " + await asyncio.to_thread(probe_rss, scratch, args.vectors, True))
    print("  " + await asyncio.to_thread(probe_rss, scratch, args.rss_vectors, False))


async def wait_for_builds(
    memory_url: str, search: Search, queries: list[str], during: list[float]
) -> str:
    """Search (memories) until memory reports a build of each namespace; their seconds."""
    async with httpx.AsyncClient(timeout=10) as http:
        n = 0
        while True:
            text = (await http.get(memory_url + "/metrics")).text
            built = {
                labels["namespace"]: value
                for labels, value in samples(text, "aether_memory_index_build_duration_seconds_sum")
            }
            failed = [
                labels["namespace"]
                for labels, value in samples(text, "aether_memory_index_builds_total")
                if labels["outcome"] == "failed" and value
            ]
            assert not failed, f"builds failed: {failed}"
            if set(built) >= set(NAMESPACES):
                return ", ".join(f"{ns} {s:.1f} s" for ns, s in built.items())
            started = time.perf_counter()
            await search("memories", queries[n % len(queries)])
            during.append((time.perf_counter() - started) * 1000)
            n += 1
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000, help="records per namespace")
    parser.add_argument("--searches", type=int, default=200, help="searches per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for searches/s")
    parser.add_argument("--rag", type=int, default=40, help="RAG answers through ai")
    parser.add_argument("--rss-vectors", type=int, default=1_000_000, help="the large shard")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
