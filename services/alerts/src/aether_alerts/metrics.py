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
# reason: duplicate (the trigger already fired the rule: exactly once), deleted, not_active,
# expired, cooling_down, same_bar (the stored rule was not armed; the engine's copy was stale).
FIRINGS_SKIPPED = Counter(
    "aether_alerts_firings_skipped_total", "Firings not recorded, by reason", ["reason"]
)
USERS_ERASED = Counter(
    "aether_alerts_users_erased_total", "Deleted accounts whose rules and inbox were erased"
)
DELIVERIES = Counter(
    "aether_alerts_deliveries_total",
    "Delivery attempts by channel (in_app, email, webhook) and resulting status",
    ["channel", "status"],
)
