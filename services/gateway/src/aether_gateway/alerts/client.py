"""alerts' AlertsService over one shared gRPC channel, every call made with the caller's token."""

from __future__ import annotations

from aether.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from aether_common.errors import Unavailable
from aether_common.grpc import Peer, ServiceClient

ALERTS = Peer(
    "alerts",
    alerts_pb2.DESCRIPTOR.services_by_name["AlertsService"],
    alerts_pb2_grpc.AlertsServiceStub,
    # Reads, and the writes whose repetition changes nothing (pause, resume, mark read). A
    # retried create would make a second rule, a retried test a second firing: not retried.
    idempotent=(
        "GetRule",
        "ListRules",
        "ListFirings",
        "PauseRule",
        "ResumeRule",
        "ListNotifications",
        "MarkRead",
        "MarkAllRead",
        "UnreadCount",
        "GetFiring",
        "ListDeliveries",
        "ListWebhooks",
        "ReplayDelivery",
    ),
)


class AlertsNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "alerts is not configured on this gateway (AETHER_ALERTS_GRPC_TARGET)",
            code="alerts_not_configured",
        )


class AlertsClient(ServiceClient["alerts_pb2_grpc.AlertsServiceAsyncStub"]):
    """alerts' AlertsService; every call carries the caller's token."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(ALERTS, target, timeout_s=timeout_s)
