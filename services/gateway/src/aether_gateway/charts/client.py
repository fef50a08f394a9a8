"""charts' ChartsService over one shared gRPC channel, every call made with the caller's token."""

from __future__ import annotations

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_common.errors import Unavailable
from aether_common.grpc import Peer, ServiceClient

CHARTS = Peer(
    "charts",
    charts_pb2.DESCRIPTOR.services_by_name["ChartsService"],
    charts_pb2_grpc.ChartsServiceStub,
    # Reads, and RenderChart (a retry finds the image stored, or draws the same one again).
    # ImportBars replaces by time, but a retried file is large: not retried.
    idempotent=(
        "GetCandles",
        "GetIndicators",
        "GetQuote",
        "ListIndicators",
        "ListSymbols",
        "RenderChart",
    ),
)


class ChartsNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "charts is not configured on this gateway (AETHER_CHARTS_GRPC_TARGET)",
            code="charts_not_configured",
        )


class ChartsClient(ServiceClient["charts_pb2_grpc.ChartsServiceAsyncStub"]):
    """charts' ChartsService; every call carries the caller's token."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(CHARTS, target, timeout_s=timeout_s)
