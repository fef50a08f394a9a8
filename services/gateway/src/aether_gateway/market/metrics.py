"""The market stream's Prometheus metrics. The fan-out counts in bulk (one `inc(n)` per frame
from Redis, not one per delivery)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("aether_gateway_market_connections", "Open market stream WebSocket connections")
SYMBOLS = Gauge(
    "aether_gateway_market_symbols",
    "Symbols this gateway is subscribed to in Redis (followed by at least one local client)",
)
FRAMES_IN = Counter(
    "aether_gateway_market_frames_in_total", "Frames received from clients, by type", ["type"]
)
FRAMES_OUT = Counter(
    "aether_gateway_market_frames_out_total", "tick and bar frames queued to clients", ["type"]
)
DROPPED = Counter(
    "aether_gateway_market_frames_dropped_total",
    "tick and bar frames not delivered to a subscriber: its queue was full (slow consumer, then "
    "closed 4009) or it was closing",
    ["type"],
)
FANOUT_IN = Counter(
    "aether_gateway_market_fanout_frames_total", "Frames received from charts' Redis channels"
)
FANOUT_BAD = Counter(
    "aether_gateway_market_fanout_invalid_total",
    "Frames from Redis ignored: not JSON, or not a tick or bar",
)
QUEUE_OVERFLOWS = Counter(
    "aether_gateway_market_queue_overflows_total",
    "Connections closed because their outbound queue overflowed (4009)",
)
CLOSES = Counter(
    "aether_gateway_market_closes_total",
    "Connections closed by the gateway, by close code",
    ["code"],
)
FANOUT_RECONNECTS = Counter(
    "aether_gateway_market_fanout_reconnects_total",
    "Times the market fan-out pub/sub connection was lost",
)
SYMBOL_LOOKUPS = Counter(
    "aether_gateway_market_symbol_lookups_total",
    "Symbol existence checks: answered from the cache (hit) or by charts (miss)",
    ["result"],
)
