"""The worker's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_SUBMITTED = Counter("aether_worker_jobs_submitted_total", "Jobs accepted", ["type"])
# outcome: completed, retried, dead, cancelled, released (its worker stopped), fenced (the
# attempt had lost its job).
ATTEMPTS = Counter(
    "aether_worker_attempts_total", "Attempts finished, by type and outcome", ["type", "outcome"]
)
RUNNING = Gauge("aether_worker_jobs_running", "Attempts running in this process", ["type"])
RUN_SECONDS = Histogram(
    "aether_worker_attempt_seconds",
    "How long an attempt ran",
    ["type"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
QUEUE_WAIT_SECONDS = Histogram(
    "aether_worker_queue_wait_seconds",
    "From submit (or a due retry) to the claim",
    ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LEASES_EXPIRED = Counter(
    "aether_worker_leases_expired_total", "Attempts whose lease ran out (worker gone)", ["type"]
)
JOBS_REPLAYED = Counter("aether_worker_jobs_replayed_total", "Dead jobs replayed", ["type"])
JOBS_PURGED = Counter("aether_worker_jobs_purged_total", "Jobs removed by retention")
USERS_ERASED = Counter(
    "aether_worker_users_erased_total", "Deleted accounts whose jobs were erased"
)
