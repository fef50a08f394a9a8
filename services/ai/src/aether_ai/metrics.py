"""The AI service's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds: a cached first token in milliseconds up to a slow deep answer.
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)

FIRST_TOKEN_SECONDS = Histogram(
    "aether_ai_first_token_seconds",
    "Request start to the first streamed token, by model",
    ["model"],
    buckets=GENERATION_BUCKETS,
)
GENERATION_SECONDS = Histogram(
    "aether_ai_generation_seconds",
    "Request start to the last token, by model",
    ["model"],
    buckets=GENERATION_BUCKETS,
)
TOKENS_IN = Counter("aether_ai_tokens_in_total", "Prompt tokens sent to models", ["model"])
TOKENS_OUT = Counter("aether_ai_tokens_out_total", "Completion tokens received", ["model"])
# Streams whose endpoint reported no usage: tokens were counted by the service (llm.py).
USAGE_ESTIMATED = Counter(
    "aether_ai_usage_estimated_total", "Generations whose token counts were estimated", ["model"]
)
# outcome: ok, error.
MODEL_CALLS = Counter(
    "aether_ai_model_calls_total", "Calls to a model endpoint", ["model", "outcome"]
)
GENERATIONS_CANCELLED = Counter(
    "aether_ai_generations_cancelled_total",
    "Generations stopped because the caller went away (upstream stream closed, slot freed)",
)
BUDGET_EXCEEDED = Counter(
    "aether_ai_latency_budget_exceeded_total",
    "Generations cut at their mode's latency budget",
    ["mode"],
)

# level: l1, l2; outcome: hit, miss, error.
CACHE_LOOKUPS = Counter(
    "aether_ai_cache_lookups_total", "Response cache lookups", ["level", "outcome"]
)
# reason: entries, bytes, expired, invalidated.
CACHE_EVICTIONS = Counter(
    "aether_ai_cache_evictions_total", "Entries dropped from the in-process cache", ["reason"]
)
CACHE_L1_ENTRIES = Gauge("aether_ai_cache_l1_entries", "Entries in the in-process cache")
CACHE_L1_BYTES = Gauge("aether_ai_cache_l1_bytes", "Bytes held by the in-process cache")

QUEUE_DEPTH = Gauge("aether_ai_queue_depth", "Requests waiting for a model slot")
IN_FLIGHT = Gauge("aether_ai_in_flight", "Model calls running")
QUEUE_REJECTED = Counter(
    "aether_ai_queue_rejected_total", "Requests refused with ai_busy after the queue timeout"
)

# reason: unavailable, timeout, error.
RAG_DEGRADED = Counter(
    "aether_ai_rag_degraded_total",
    "Answers given without RAG because the memory service failed",
    ["reason"],
)
RAG_RETRIEVAL = Histogram(
    "aether_ai_rag_retrieval_seconds",
    "RAG: from the request's query to its retrieved context (memory searches of every namespace)",
    buckets=(0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
ROUTED = Counter("aether_ai_auto_routed_total", "Requests routed by mode auto", ["mode"])
