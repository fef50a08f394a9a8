"""Prometheus metrics shared by every service (RED per HTTP route and gRPC method, Kafka).

Defined once here so names and labels are the same everywhere; served at /metrics by runner.py.
The pod/job labels Prometheus adds identify the service, so no `service` label is repeated.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds; covers fast cache hits up to slow model calls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "aether_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "aether_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
GRPC_SERVER_HANDLED = Counter(
    "aether_grpc_server_handled_total", "gRPC calls handled by this server", ["method", "code"]
)
GRPC_SERVER_LATENCY = Histogram(
    "aether_grpc_server_handling_seconds",
    "gRPC server handling latency",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
GRPC_CLIENT_HANDLED = Counter(
    "aether_grpc_client_handled_total", "gRPC calls made by this process", ["method", "code"]
)
GRPC_CLIENT_LATENCY = Histogram(
    "aether_grpc_client_handling_seconds",
    "gRPC client call latency",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
KAFKA_PRODUCED = Counter("aether_kafka_produced_total", "Records produced", ["topic", "outcome"])
KAFKA_CONSUMED = Counter(
    "aether_kafka_consumed_total",
    "Records consumed, by outcome: handled, duplicate, retried, dead_lettered",
    ["topic", "group", "outcome"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "aether_kafka_consumer_lag",
    "High watermark minus committed position",
    ["topic", "partition", "group"],
)
KAFKA_HANDLE_LATENCY = Histogram(
    "aether_kafka_handle_seconds",
    "Time spent in an event handler",
    ["topic", "group"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PENDING = Gauge("aether_outbox_pending", "Outbox events not yet published", ["store"])
OUTBOX_PUBLISHED = Counter(
    "aether_outbox_published_total", "Outbox events published to Kafka", ["store"]
)

# Access tokens verified locally (access_tokens.py): the gateway and every service.
TOKENS_REJECTED = Counter(
    "aether_access_tokens_rejected_total", "Access tokens refused, by reason", ["reason"]
)
JWKS_FETCHES = Counter(
    "aether_jwks_fetches_total",
    "JWKS fetches from auth, by trigger and outcome",
    ["trigger", "outcome"],
)
