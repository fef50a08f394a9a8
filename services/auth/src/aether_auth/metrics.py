"""The auth service's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# method: "password", "mfa", "oauth:<provider>" (configured names only: bounded).
# outcome: success, mfa_required, bad_credentials, bad_mfa_code, locked, throttled.
SIGN_INS = Counter(
    "aether_auth_sign_ins_total", "Sign-in attempts by method and outcome", ["method", "outcome"]
)
LOCKOUTS = Counter("aether_auth_lockouts_total", "Accounts locked after repeated failures")
REFRESH_TOKEN_REUSE = Counter(
    "aether_auth_refresh_token_reuse_total", "Rotated refresh tokens presented again"
)
PASSWORD_HASH_SECONDS = Histogram(
    "aether_auth_password_hash_seconds",
    "argon2id hash or verify time, in the worker thread",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
# client: a configured client id, or "unknown" (bounded). outcome: issued, bad_credentials,
# throttled, placeholder_secret.
SERVICE_TOKENS = Counter(
    "aether_auth_service_tokens_total",
    "IssueServiceToken calls by client and outcome",
    ["client", "outcome"],
)
