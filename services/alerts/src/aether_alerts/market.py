"""Whether charts knows a symbol: its GetQuote, called with the caller's token (the outgoing
interceptor forwards it). NOT_FOUND there is a bad rule here (INVALID_ARGUMENT naming the
symbol); charts away is UNAVAILABLE (the rule is not stored unchecked)."""

from __future__ import annotations

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_common.errors import NotFound, ValidationFailed
from aether_common.grpc import Peer, ServiceClient

CHARTS = Peer(
    "charts",
    charts_pb2.DESCRIPTOR.services_by_name["ChartsService"],
    charts_pb2_grpc.ChartsServiceStub,
    idempotent=("GetQuote", "GetCandles", "GetIndicators"),
)


class SymbolCheck(ServiceClient["charts_pb2_grpc.ChartsServiceAsyncStub"]):
    """Component: the channel to charts (never blocks readiness: only writes of rules use it)."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        super().__init__(CHARTS, target, timeout_s=timeout_s, needs_peer=False)

    async def require_known(self, symbol: str) -> float:
        """The symbol's last price; ValidationFailed when charts does not know it."""
        try:
            quote = await self.call(self.stub.GetQuote, charts_pb2.GetQuoteRequest(symbol=symbol))
        except NotFound as exc:
            raise ValidationFailed(
                f"symbol: {symbol} is not an instrument the charts service knows",
                code="unknown_symbol",
                field_errors={"symbol": "unknown"},
            ) from exc
        return quote.price
