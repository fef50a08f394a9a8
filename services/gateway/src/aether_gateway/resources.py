"""Everything the gateway holds open, made in the app's lifespan and closed with it."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from aether_common.access_tokens import JwksCache, TokenVerifier
from aether_common.logging import get_logger
from aether_common.redis_pipeline import AutoPipeline
from aether_gateway.ai.client import AiClient
from aether_gateway.alerts.client import AlertsClient
from aether_gateway.auth.cache import ProfileCache
from aether_gateway.auth.client import AuthClient
from aether_gateway.charts.client import ChartsClient
from aether_gateway.chat.runtime import ChatRuntime
from aether_gateway.config import GatewaySettings
from aether_gateway.jobs.client import WorkerClient
from aether_gateway.market.runtime import MarketRuntime
from aether_gateway.memory.client import MemoryClient
from aether_gateway.rate_limit import RateLimiter, RatePolicy
from aether_gateway.redis_fail_open import RedisGuard
from aether_gateway.revocation import Revocations
from aether_gateway.revoked_or_limited import AccessGate

log = get_logger(__name__)


def _redis(url: str, settings: GatewaySettings) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


@dataclass
class GatewayResources:
    settings: GatewaySettings
    redis: Redis
    pipeline: AutoPipeline
    revocation_redis: Redis
    auth: AuthClient
    jwks: JwksCache
    verifier: TokenVerifier
    revocations: Revocations
    limiter: RateLimiter
    gate: AccessGate
    profiles: ProfileCache
    chat: ChatRuntime
    # Optional like chat: None when not configured (their routes answer 503).
    ai: AiClient | None
    memory: MemoryClient | None
    charts: ChartsClient | None
    alerts: AlertsClient | None
    worker: WorkerClient | None
    # WS /api/market/stream: needs charts (its symbols), idle without it.
    market: MarketRuntime

    @classmethod
    def open(cls, settings: GatewaySettings) -> GatewayResources:
        """Clients connect lazily: nothing here waits on Redis or auth being up."""
        redis = _redis(settings.redis_url, settings)
        revocation_redis = (
            _redis(settings.revocation_redis_url, settings)
            if settings.revocation_redis_url
            else redis
        )
        guard = RedisGuard(settings.redis_cooldown_s)
        # A separate denylist server fails (and recovers) on its own.
        revocation_guard = (
            RedisGuard(settings.redis_cooldown_s) if revocation_redis is not redis else guard
        )
        auth = AuthClient(settings.auth_grpc_target, timeout_s=settings.auth_timeout_s)
        auth.open()
        jwks = JwksCache(
            auth.get_jwks,
            max_age_s=settings.jwks_max_age_s,
            refetch_interval_s=settings.jwks_refetch_interval_s,
        )
        revocations = Revocations(
            revocation_redis,
            redis,
            revocation_guard,
            auth_prefix=settings.revocation_key_prefix,
            own_prefix=settings.redis_key_prefix,
            grace_s=settings.jwt_leeway_s,
        )
        # Signature and claims only: revocation is checked with the rate limit
        # (revoked_or_limited.py).
        verifier = TokenVerifier(
            jwks,
            None,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
            expected_typ=settings.jwt_typ,
            # Service tokens are for service-to-service calls: every route and socket verifies
            # through this one verifier, so none of them accepts one.
            refuse_service_tokens=True,
        )
        # The per-request Redis work (access check, rate limit, cached profile) is pipelined.
        pipeline = AutoPipeline(redis)
        limiter = RateLimiter(
            pipeline,
            guard,
            RatePolicy(settings.plan_limits(), settings.rate_limit_anonymous),
            prefix=settings.redis_key_prefix,
            window_s=settings.rate_limit_window_s,
        )
        gate = AccessGate(limiter, revocations, pipeline)
        profiles = ProfileCache(
            redis,
            pipeline,
            guard,
            prefix=settings.redis_key_prefix,
            ttl_s=settings.profile_cache_ttl_s,
        )
        charts = _charts_client(settings)
        return cls(
            settings=settings,
            redis=redis,
            pipeline=pipeline,
            revocation_redis=revocation_redis,
            auth=auth,
            jwks=jwks,
            verifier=verifier,
            revocations=revocations,
            limiter=limiter,
            gate=gate,
            profiles=profiles,
            chat=ChatRuntime.open(settings),
            ai=_ai_client(settings),
            memory=_memory_client(settings),
            charts=charts,
            alerts=_alerts_client(settings),
            worker=_worker_client(settings),
            market=MarketRuntime.open(settings, charts),
        )

    async def close(self) -> None:
        await self.chat.close()
        await self.market.close()
        if self.ai is not None:
            await self.ai.stop()
        if self.memory is not None:
            await self.memory.stop()
        if self.charts is not None:
            await self.charts.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.worker is not None:
            await self.worker.stop()
        await self.auth.stop()
        await self.pipeline.aclose()
        if self.revocation_redis is not self.redis:
            await self.revocation_redis.aclose()
        await self.redis.aclose()


def _ai_client(settings: GatewaySettings) -> AiClient | None:
    if settings.ai_grpc_target is None:
        log.warning("ai is not configured (AETHER_AI_GRPC_TARGET): /api/ai answers 503")
        return None
    ai = AiClient(
        settings.ai_grpc_target,
        timeout_s=settings.ai_timeout_s,
        stream_timeout_s=settings.ai_stream_timeout_s,
        busy_retry_after_s=settings.ai_busy_retry_after_s,
    )
    ai.open()
    return ai


def _memory_client(settings: GatewaySettings) -> MemoryClient | None:
    if settings.memory_grpc_target is None:
        log.warning("memory is not configured (AETHER_MEMORY_GRPC_TARGET): /api/memory answers 503")
        return None
    memory = MemoryClient(settings.memory_grpc_target, timeout_s=settings.memory_timeout_s)
    memory.open()
    return memory


def _charts_client(settings: GatewaySettings) -> ChartsClient | None:
    if settings.charts_grpc_target is None:
        log.warning("charts is not configured (AETHER_CHARTS_GRPC_TARGET): /api/charts answers 503")
        return None
    charts = ChartsClient(settings.charts_grpc_target, timeout_s=settings.charts_timeout_s)
    charts.open()
    return charts


def _alerts_client(settings: GatewaySettings) -> AlertsClient | None:
    if settings.alerts_grpc_target is None:
        log.warning("alerts is not configured (AETHER_ALERTS_GRPC_TARGET): /api/alerts answers 503")
        return None
    alerts = AlertsClient(settings.alerts_grpc_target, timeout_s=settings.alerts_timeout_s)
    alerts.open()
    return alerts


def _worker_client(settings: GatewaySettings) -> WorkerClient | None:
    if settings.worker_grpc_target is None:
        log.warning(
            "the worker is not configured (AETHER_WORKER_GRPC_TARGET): /api/jobs answers 503"
        )
        return None
    worker = WorkerClient(
        settings.worker_grpc_target,
        timeout_s=settings.worker_timeout_s,
        watch_timeout_s=settings.worker_watch_timeout_s,
    )
    worker.open()
    return worker
