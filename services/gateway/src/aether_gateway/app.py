"""The gateway app: Aether's HTTP base (aether_common.http) + the edge middleware + the routes.

Middleware, outermost first:
  Request (create_http_app: request id, RED metrics, the generic 500, security headers)
  -> gzip (only for clients that accept it) -> CORS -> Access (body limit, token, rate limit)
  -> routes
so a 429, a 413 or a refused preflight still carries the request id, security headers and CORS
headers, and is counted in the RED metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.middleware import Middleware

from aether_common.http import create_http_app
from aether_common.logging import get_logger
from aether_gateway import ops_routes
from aether_gateway.access_middleware import AccessMiddleware
from aether_gateway.ai import routes as ai_routes
from aether_gateway.alerts import routes as alerts_routes
from aether_gateway.auth import admin_routes
from aether_gateway.auth import routes as auth_routes
from aether_gateway.charts import routes as charts_routes
from aether_gateway.chat import routes as chat_routes
from aether_gateway.config import GatewaySettings
from aether_gateway.jobs import documents as jobs_documents
from aether_gateway.jobs import routes as jobs_routes
from aether_gateway.market import routes as market_routes
from aether_gateway.memory import routes as memory_routes
from aether_gateway.middleware import CompressionMiddleware, cors_middleware, security_headers
from aether_gateway.resources import GatewayResources

DESCRIPTION = """The public entry to Aether. Errors always answer
`{"error": code, "detail": message, "status_code": n}`; rate limits per plan (free 60/min,
premium 300/min, admin unlimited) answer 429 with `Retry-After`."""

log = get_logger(__name__)


def create_app(settings: GatewaySettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = GatewayResources.open(settings)
        app.state.gateway = resources
        resources.chat.start()
        resources.market.start()
        # Warm the key cache without delaying start-up (auth may come up after us).
        prefetch = asyncio.create_task(resources.jwks.prefetch(), name="jwks-prefetch")
        try:
            yield
        finally:
            prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prefetch
            await resources.close()

    app = create_http_app(
        "gateway",
        routers=[
            ops_routes.router,
            auth_routes.router,
            auth_routes.well_known_router,
            admin_routes.router,
            chat_routes.router,
            ai_routes.router,
            memory_routes.router,
            charts_routes.router,
            market_routes.router,
            alerts_routes.delivery,
            alerts_routes.router,
            alerts_routes.inbox,
            jobs_routes.admin,
            jobs_routes.router,
            jobs_documents.router,
        ],
        lifespan=lifespan,
        docs=settings.docs_enabled,
        response_headers=security_headers(hsts_max_age_s=settings.hsts_max_age_s),
    )
    app.title = "Aether API"
    app.description = DESCRIPTION
    # Appended = inside create_http_app's request-id, metrics and error-boundary middleware.
    app.user_middleware += [
        Middleware(CompressionMiddleware, minimum_size=settings.gzip_minimum_bytes),
        cors_middleware(settings.cors_origins),
        Middleware(AccessMiddleware, max_body_bytes=settings.max_body_bytes),
    ]
    return app
