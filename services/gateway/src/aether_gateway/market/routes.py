"""`WS /api/market/stream`: the route (a plain ASGI app on Starlette's WebSocketRoute, as chat's
socket)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import WebSocketRoute

from aether_gateway.market.ws import MarketSession
from aether_gateway.ws.session import SocketApp

router = APIRouter(tags=["market"])
router.routes.append(
    WebSocketRoute("/api/market/stream", SocketApp(MarketSession), name="market_stream")
)
