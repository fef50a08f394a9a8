"""The gateway's settings (`GATEWAY_*`, plus the platform-wide `AETHER_*` addresses)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from aether_common.settings import AetherSettings, Environment

DEV_HOST = "127.0.0.1"


def _env(name: str) -> AliasChoices:
    # Platform-wide names (set by devstack and the Helm chart), not GATEWAY_-prefixed.
    return AliasChoices(name)


class GatewaySettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service_name: ClassVar[str] = "gateway"

    # Listen address: the public entry is 8080; in dev it binds loopback only (listen_host).
    http_port: int = Field(default=8080, ge=1, le=65535, validation_alias=_env("AETHER_HTTP_PORT"))

    # -- where the dependencies are (required: no default) -----------------------------------
    redis_url: str = Field(validation_alias=_env("AETHER_REDIS_URL"))
    auth_grpc_target: str = Field(validation_alias=_env("AETHER_AUTH_GRPC_TARGET"))
    # Where auth keeps its access-token denylist; the gateway's own Redis when unset.
    revocation_redis_url: str | None = None

    # -- Redis ----------------------------------------------------------------------------------
    redis_key_prefix: str = "gateway:"
    # Keys written by auth (see revocation.py for the contract).
    revocation_key_prefix: str = "auth:revoked:"
    # Short: a slow Redis must not stall every request (everything Redis does here fails open).
    redis_timeout_s: float = Field(default=0.5, gt=0)
    # After a Redis failure, skip Redis this long instead of waiting on it per request.
    redis_cooldown_s: float = Field(default=1.0, ge=0)

    # -- upstream (auth over gRPC) --------------------------------------------------------------
    auth_timeout_s: float = Field(default=5.0, gt=0)

    # -- JWT ------------------------------------------------------------------------------------
    # Must match auth's AUTH_ISSUER / AUTH_AUDIENCE (their defaults are these).
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    # RFC 9068 access tokens carry `typ: at+jwt`: an ID or refresh token is never taken for one.
    jwt_typ: str = "at+jwt"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    # JWKS: refreshed when older than this; an unknown kid refetches at most once per interval.
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)

    # -- rate limits: requests per window, by plan (None = unlimited) ----------------------------
    rate_limit_enabled: bool = True
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    rate_limit_free: int | None = Field(default=60, ge=1)
    rate_limit_premium: int | None = Field(default=300, ge=1)
    rate_limit_admin: int | None = Field(default=None, ge=1)
    rate_limit_anonymous: int | None = Field(default=60, ge=1)

    # -- HTTP edge ------------------------------------------------------------------------------
    profile_cache_ttl_s: int = Field(default=600, ge=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # Comma-separated in the environment: GATEWAY_CORS_ORIGINS=https://app.example.com,...
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    hsts_max_age_s: int = Field(default=63_072_000, ge=0)
    gzip_minimum_bytes: int = Field(default=500, ge=0)
    docs_enabled: bool = True

    # -- chat (chat/; the protocol is docs/chat.md) ----------------------------------------------
    # Optional so that a gateway can run without chat (its routes then answer 503); devstack and
    # the Helm chart set it.
    chat_grpc_target: str | None = Field(
        default=None, validation_alias=_env("AETHER_CHAT_GRPC_TARGET")
    )
    chat_timeout_s: float = Field(default=5.0, gt=0)
    # Where chat publishes its fan-out frames: the gateway's own Redis (redis_url) when unset.
    chat_fanout_redis_url: str | None = None
    chat_fanout_prefix: str = "chat:fanout:"
    # WebSocket (WS /api/chat/connect)
    chat_ws_auth_timeout_s: float = Field(default=5.0, gt=0)
    chat_ws_max_frame_bytes: int = Field(default=65_536, ge=1024, le=16_777_216)
    # Frames waiting for one client; a client that lets more pile up is closed (4009).
    chat_ws_queue_frames: int = Field(default=1024, ge=8)
    # A ping frame after this long without a frame from the client; closed (4008) after
    # chat_ws_idle_timeout_s without one.
    chat_ws_heartbeat_s: float = Field(default=20.0, gt=0)
    chat_ws_idle_timeout_s: float = Field(default=60.0, gt=0)
    chat_ws_max_rooms: int = Field(default=500, ge=1)
    # Client frames per window, per connection, by plan (None = unlimited).
    chat_ws_rate_window_s: float = Field(default=60.0, gt=0)
    chat_ws_rate_free: int | None = Field(default=300, ge=1)
    chat_ws_rate_premium: int | None = Field(default=1200, ge=1)
    chat_ws_rate_admin: int | None = Field(default=None, ge=1)
    # On a seq gap, wait this long for the missing frame (pub/sub reordering) before GetHistory.
    chat_gap_grace_s: float = Field(default=0.05, ge=0, le=5)
    chat_history_page: int = Field(default=100, ge=1, le=500)
    # UpdatePresence(online) for each connected user this often (chat keeps presence with a TTL).
    chat_presence_interval_s: float = Field(default=30.0, gt=0)

    # -- AI and memory (ai/, memory/; the public API is docs/ai.md) -----------------------------
    # Optional like chat: without a target the routes answer 503 (and WS /ws/ai-chat closes 1013).
    ai_grpc_target: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_AI_GRPC_TARGET", "AETHER_AI_GRPC_TARGET"),
    )
    memory_grpc_target: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_MEMORY_GRPC_TARGET", "AETHER_MEMORY_GRPC_TARGET"),
    )
    # Unary AI calls (Search runs a summary through the model, so not the 5 s of auth and chat).
    ai_timeout_s: float = Field(default=60.0, gt=0)
    # The whole of one answer (Chat, Analyze; streamed or whole): queue wait plus generation.
    ai_stream_timeout_s: float = Field(default=120.0, gt=0)
    memory_timeout_s: float = Field(default=15.0, gt=0)
    # charts (charts/): optional like memory; without a target /api/charts answers 503.
    charts_grpc_target: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_CHARTS_GRPC_TARGET", "AETHER_CHARTS_GRPC_TARGET"),
    )
    charts_timeout_s: float = Field(default=15.0, gt=0)
    # alerts (alerts/): optional too; without a target /api/alerts and /api/notifications
    # answer 503.
    alerts_grpc_target: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_ALERTS_GRPC_TARGET", "AETHER_ALERTS_GRPC_TARGET"),
    )
    # A rule write asks charts whether its symbol exists (charts' own timeout is 5 s).
    alerts_timeout_s: float = Field(default=10.0, gt=0)
    # worker (jobs/; docs/jobs-api.md): optional too; without a target /api/jobs and the root
    # /jobs answer 503, and /api/ai/generate?async=true stays on ai's own job table.
    worker_grpc_target: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_WORKER_GRPC_TARGET", "AETHER_WORKER_GRPC_TARGET"),
    )
    worker_timeout_s: float = Field(default=10.0, gt=0)
    # One WatchJob stream's deadline: an SSE watch ends with a `timeout` error event after it
    # (the client watches again).
    worker_watch_timeout_s: float = Field(default=3600.0, gt=0)
    # SSE (GET /api/jobs/{id}/events): a comment line after this long without an event.
    worker_sse_keepalive_s: float = Field(default=15.0, gt=0)
    # In-app notifications (docs/alerts.md): alerts publishes each on `<prefix>user:<user_id>`
    # in this Redis (the gateway's own when unset); the gateway forwards them to that user's
    # chat sockets. Subscribed only when alerts is configured (alerts_grpc_target).
    alerts_notify_redis_url: str | None = None
    alerts_notify_prefix: str = "alerts:notify:"
    # Retry-After on `ai_busy` (every model slot busy) when the service does not name one.
    ai_busy_retry_after_s: int = Field(default=2, ge=1, le=300)
    # SSE (POST /api/ai/chat/stream): a comment line after this long without an event, so
    # proxies do not take a slow first token for a dead connection.
    ai_sse_keepalive_s: float = Field(default=15.0, gt=0)
    # WebSocket (WS /ws/ai-chat)
    ai_ws_auth_timeout_s: float = Field(default=5.0, gt=0)
    ai_ws_max_frame_bytes: int = Field(default=65_536, ge=1024, le=16_777_216)
    # Frames waiting for one client (chunks of a generation); more and it is closed (4009).
    ai_ws_queue_frames: int = Field(default=4096, ge=64)
    # Closed (4008) after this long without a frame from the client while nothing generates.
    ai_ws_idle_timeout_s: float = Field(default=300.0, gt=0)
    # Client frames per window, per connection, by plan (None = unlimited); cancel not counted.
    ai_ws_rate_window_s: float = Field(default=60.0, gt=0)
    ai_ws_rate_free: int | None = Field(default=60, ge=1)
    ai_ws_rate_premium: int | None = Field(default=300, ge=1)
    ai_ws_rate_admin: int | None = Field(default=None, ge=1)

    # -- the market stream (market/; WS /api/market/stream, docs/charts.md) ---------------------
    # charts publishes every tick and closed bar on `<prefix>symbol:<SYMBOL>` in this Redis (the
    # gateway's own when unset). Symbols are checked against charts (charts_grpc_target): without
    # it the socket closes 1013.
    market_stream_redis_url: str | None = None
    market_stream_prefix: str = "market:stream:"
    # Symbols one connection follows at once, by plan (an unknown plan gets the free one's).
    market_stream_symbols_free: int = Field(default=5, ge=1, le=10_000)
    market_stream_symbols_premium: int = Field(default=50, ge=1, le=10_000)
    market_stream_symbols_admin: int = Field(default=200, ge=1, le=10_000)
    # How long charts' answer "this symbol exists / does not" is reused.
    market_stream_symbol_cache_s: float = Field(default=60.0, ge=0)
    market_stream_auth_timeout_s: float = Field(default=5.0, gt=0)
    market_stream_max_frame_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    # Frames waiting for one client; a client that lets more pile up is closed (4009).
    market_stream_queue_frames: int = Field(default=2048, ge=8)
    market_stream_heartbeat_s: float = Field(default=20.0, gt=0)
    market_stream_idle_timeout_s: float = Field(default=60.0, gt=0)
    # Client frames per window, per connection, by plan (None = unlimited).
    market_stream_rate_window_s: float = Field(default=60.0, gt=0)
    market_stream_rate_free: int | None = Field(default=120, ge=1)
    market_stream_rate_premium: int | None = Field(default=600, ge=1)
    market_stream_rate_admin: int | None = Field(default=None, ge=1)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        # Tokens travel in a header the browser attaches for any allowed origin: name them.
        if "*" in value:
            raise ValueError("'*' is not allowed; list the web origins explicitly")
        return value

    @property
    def listen_host(self) -> str:
        """127.0.0.1 in dev unless AETHER_HTTP_HOST is set; the configured host elsewhere."""
        if self.environment is Environment.DEV and "http_host" not in self.model_fields_set:
            return DEV_HOST
        return self.http_host

    @property
    def fanout_redis_url(self) -> str:
        return self.chat_fanout_redis_url or self.redis_url

    @property
    def alerts_notify_url(self) -> str:
        return self.alerts_notify_redis_url or self.redis_url

    @property
    def market_stream_url(self) -> str:
        return self.market_stream_redis_url or self.redis_url

    def market_stream_symbol_limits(self) -> dict[str, int | None]:
        return {
            "free": self.market_stream_symbols_free,
            "premium": self.market_stream_symbols_premium,
            "admin": self.market_stream_symbols_admin,
        }

    def market_stream_rate_limits(self) -> dict[str, int | None]:
        return {
            "free": self.market_stream_rate_free,
            "premium": self.market_stream_rate_premium,
            "admin": self.market_stream_rate_admin,
        }

    def chat_ws_limits(self) -> dict[str, int | None]:
        return {
            "free": self.chat_ws_rate_free,
            "premium": self.chat_ws_rate_premium,
            "admin": self.chat_ws_rate_admin,
        }

    def ai_ws_limits(self) -> dict[str, int | None]:
        return {
            "free": self.ai_ws_rate_free,
            "premium": self.ai_ws_rate_premium,
            "admin": self.ai_ws_rate_admin,
        }

    def plan_limits(self) -> dict[str, int | None]:
        return {
            "free": self.rate_limit_free,
            "premium": self.rate_limit_premium,
            "admin": self.rate_limit_admin,
        }
