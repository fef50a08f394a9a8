"""The alerts service's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

# event: created, updated, deleted (rule changes through the API).
RULE_CHANGES = Counter(
    "aether_alerts_rule_changes_total", "Rule changes made through the API", ["event"]
)
FIRINGS_RECORDED = Counter(
    "aether_alerts_firings_recorded_total", "Firings recorded (test: TestRule)", ["test"]
)
FIRINGS_DUPLICATE = Counter(
    "aether_alerts_firings_duplicate_total",
    "Triggers that had already fired their rule (nothing written: exactly once)",
)
USERS_ERASED = Counter(
    "aether_alerts_users_erased_total", "Deleted accounts whose rules and inbox were erased"
)
