"""The AI side's Prometheus metrics, measured at the gateway (the service has its own)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FIRST_CHUNK = Histogram(
    "aether_gateway_ai_first_chunk_seconds",
    "From the gateway's Chat/Analyze call to the first answer chunk, by transport",
    ["transport"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
STREAMS = Counter(
    "aether_gateway_ai_streams_total",
    "Streamed answers (Chat, Analyze) by transport and outcome (done, error, cancelled)",
    ["transport", "outcome"],
)
WS_CONNECTIONS = Gauge("aether_gateway_ai_ws_connections", "Open WS /ws/ai-chat connections")
WS_CLOSES = Counter(
    "aether_gateway_ai_ws_closes_total",
    "AI WebSockets closed by the gateway, by close code",
    ["code"],
)
