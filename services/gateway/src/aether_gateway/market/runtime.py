"""What the market stream holds open for the gateway's lifetime: the hub (with its one fan-out
pub/sub connection) and the symbol directory over charts. Made in the app's lifespan
(resources.py); without charts (AETHER_CHARTS_GRPC_TARGET) there is neither, and the socket
closes 1013."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.access_tokens import AccessToken
from aether_gateway.charts.client import ChartsClient
from aether_gateway.config import GatewaySettings
from aether_gateway.market.hub import MarketHub
from aether_gateway.market.symbols import SymbolDirectory
from aether_gateway.rate_limit import RatePolicy
from aether_gateway.ws.connection import frame_limit


@dataclass
class MarketRuntime:
    hub: MarketHub | None
    directory: SymbolDirectory | None
    ws_policy: RatePolicy
    symbol_policy: RatePolicy
    default_symbols: int

    @classmethod
    def open(cls, settings: GatewaySettings, charts: ChartsClient | None) -> MarketRuntime:
        ws_policy = RatePolicy(settings.market_stream_rate_limits(), None)
        free = settings.market_stream_symbols_free
        symbol_policy = RatePolicy(settings.market_stream_symbol_limits(), free)
        if charts is None:
            return cls(None, None, ws_policy, symbol_policy, free)
        hub = MarketHub(
            settings.market_stream_url,
            settings.market_stream_prefix,
            heartbeat_s=settings.market_stream_heartbeat_s,
            idle_timeout_s=settings.market_stream_idle_timeout_s,
            token_leeway_s=settings.jwt_leeway_s,
        )
        directory = SymbolDirectory(charts, ttl_s=settings.market_stream_symbol_cache_s)
        return cls(hub, directory, ws_policy, symbol_policy, free)

    def start(self) -> None:
        if self.hub is not None:
            self.hub.start()

    async def close(self) -> None:
        if self.hub is not None:
            await self.hub.close()

    def ws_limit(self, token: AccessToken) -> int | None:
        """Client frames per window for this caller's connections (None: unlimited)."""
        return frame_limit(self.ws_policy, token)

    def max_symbols(self, token: AccessToken) -> int:
        """Symbols one connection of this caller follows at once, by the token's plan."""
        limit = self.symbol_policy.limit_for(token.plan)
        return limit if limit is not None else self.default_symbols
