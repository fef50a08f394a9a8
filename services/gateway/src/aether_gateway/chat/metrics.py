"""The chat side's Prometheus metrics. Hot paths count in bulk (one `inc(n)` per fan-out frame,
not one per delivery)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("aether_gateway_chat_connections", "Open chat WebSocket connections")
ROOMS = Gauge(
    "aether_gateway_chat_rooms", "Rooms this gateway is subscribed to in Redis (local interest)"
)
FRAMES_IN = Counter(
    "aether_gateway_chat_frames_in_total", "Frames received from clients, by type", ["type"]
)
FRAMES_OUT = Counter(
    "aether_gateway_chat_frames_out_total", "Frames queued to clients, by type", ["type"]
)
FANOUT_IN = Counter(
    "aether_gateway_chat_fanout_frames_total", "Frames received from chat's Redis fan-out"
)
FANOUT_BAD = Counter(
    "aether_gateway_chat_fanout_invalid_total", "Fan-out frames that could not be parsed"
)
QUEUE_OVERFLOWS = Counter(
    "aether_gateway_chat_queue_overflows_total",
    "Connections closed because their outbound queue overflowed (4009)",
)
GAP_FILLS = Counter(
    "aether_gateway_chat_gap_fills_total",
    "GetHistory catch-ups: resume (subscribe with after_seq), gap (missing seq), resync "
    "(fan-out connection lost)",
    ["reason"],
)
DUPLICATES = Counter(
    "aether_gateway_chat_duplicates_dropped_total", "Message frames dropped as already delivered"
)
CLOSES = Counter(
    "aether_gateway_chat_closes_total", "Connections closed by the gateway, by close code", ["code"]
)
FANOUT_RECONNECTS = Counter(
    "aether_gateway_chat_fanout_reconnects_total", "Times the fan-out pub/sub connection was lost"
)
# In-app alert notifications on the chat socket (chat/notify.py).
NOTIFY_USERS = Gauge(
    "aether_gateway_chat_notify_users",
    "Users whose notification channel this gateway is subscribed to (an open chat socket here)",
)
NOTIFY_DELIVERED = Counter(
    "aether_gateway_chat_notifications_delivered_total",
    "notification frames queued to chat sockets (one per socket)",
)
NOTIFY_DROPPED = Counter(
    "aether_gateway_chat_notifications_dropped_total",
    "notification frames not queued to a socket: it was closing, or its queue was full (then "
    "closed 4009); the inbox still has them",
)
NOTIFY_FANOUT_IN = Counter(
    "aether_gateway_chat_notify_fanout_frames_total", "Frames received from alerts' Redis channels"
)
NOTIFY_FANOUT_BAD = Counter(
    "aether_gateway_chat_notify_fanout_invalid_total",
    "Frames from alerts' Redis channels ignored: not a JSON notification object",
)
NOTIFY_RECONNECTS = Counter(
    "aether_gateway_chat_notify_fanout_reconnects_total",
    "Times the notification pub/sub connection was lost",
)
