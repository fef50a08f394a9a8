"""`WS /api/market/stream`: live ticks and closed bars from charts, through the gateway's shared
socket lifecycle (ws/) and a Redis fan-out connection (fanout.py). Protocol: docs/charts.md,
"Live market stream"."""
