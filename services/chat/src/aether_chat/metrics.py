"""The chat service's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# outcome: created, duplicate (an idempotent retry answered from the stored message).
MESSAGES_SENT = Counter(
    "aether_chat_messages_sent_total",
    "SendMessage calls that stored or found a message",
    ["outcome"],
)
FANOUT_PUBLISHED = Counter(
    "aether_chat_fanout_frames_total", "Frames published on the Redis fan-out channels", ["type"]
)
# A failed publish never fails the request (the state is committed; gateways fill gaps).
FANOUT_FAILURES = Counter(
    "aether_chat_fanout_failures_total", "Redis fan-out or cache-version updates that failed"
)
# cache: rooms, history; outcome: hit, miss, error.
CACHE_LOOKUPS = Counter(
    "aether_chat_cache_lookups_total", "Cache lookups by cache and outcome", ["cache", "outcome"]
)
TRANSACTION_RETRIES = Counter(
    "aether_chat_transaction_retries_total", "Transactions re-run after a write conflict"
)
ARCHIVED_MESSAGES = Counter(
    "aether_chat_archived_messages_total", "Messages written to the archive before their purge"
)
RETENTION_DELETED = Counter(
    "aether_chat_retention_deleted_total", "Messages deleted for being past their retention"
)
USERS_ERASED = Counter(
    "aether_chat_users_erased_total", "Deleted accounts whose chat data was erased"
)
SEND_BATCH_SIZE = Histogram(
    "aether_chat_send_batch_size",
    "Messages stored per room transaction (sends that queued up commit together)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
