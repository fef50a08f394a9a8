"""The memory service's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from aether_common.metrics import LATENCY_BUCKETS

# embedder: local, openai.
TEXTS_EMBEDDED = Counter(
    "aether_memory_texts_embedded_total", "Texts turned into vectors by the model", ["embedder"]
)
EMBED_DURATION = Histogram(
    "aether_memory_embedding_duration_seconds",
    "Time of one model call (a coalesced batch)",
    ["embedder"],
    buckets=LATENCY_BUCKETS,
)
EMBED_BATCH_SIZE = Histogram(
    "aether_memory_embedding_batch_texts",
    "Texts per model call (concurrent requests coalesce)",
    ["embedder"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
EMBED_FAILURES = Counter(
    "aether_memory_embedding_failures_total", "Model calls that failed", ["embedder"]
)
SEARCH_DURATION = Histogram(
    "aether_memory_search_duration_seconds",
    "Search: embedding the query, the vector search and reading the hits",
    ["namespace"],
    buckets=LATENCY_BUCKETS,
)
# outcome: embedded (new or changed text), unchanged (same text: metadata only, no model call).
RECORDS_UPSERTED = Counter(
    "aether_memory_records_upserted_total", "Records stored", ["namespace", "outcome"]
)
RECORDS_DELETED = Counter(
    "aether_memory_records_deleted_total", "Records deleted", ["namespace", "reason"]
)
USERS_ERASED = Counter(
    "aether_memory_users_erased_total", "Deleted accounts whose records were erased"
)
RECORDS_REINDEXED = Counter(
    "aether_memory_records_reindexed_total",
    "Records embedded again into a collection that had to be created (a lost index)",
    ["namespace"],
)
# outcome: built, failed.
INDEX_BUILDS = Counter(
    "aether_memory_index_builds_total",
    "Qdrant Edge index builds (a copy optimized in a child process, then swapped in)",
    ["namespace", "outcome"],
)
INDEX_BUILD_DURATION = Histogram(
    "aether_memory_index_build_duration_seconds",
    "Qdrant Edge index build: copy, optimize in the child, replay of the writes meanwhile, swap",
    ["namespace"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
