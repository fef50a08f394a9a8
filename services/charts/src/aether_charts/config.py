"""The charts service's settings (env prefix `CHARTS_`; the devstack's `AETHER_*` names also work).

Required values have no default: PostgreSQL and the gRPC address of auth (the JWKS that
verifies callers' tokens). The S3 server and keys are the platform's `AETHER_S3_*`
(aether_common.s3); the bucket of chart images is `CHARTS_S3_BUCKET` (aether-charts).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from aether_charts.bars import RESOLUTIONS, SYMBOL
from aether_common.s3 import S3Settings


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class ChartsSettings(S3Settings):
    model_config = SettingsConfigDict(env_prefix="CHARTS_")

    service_name: ClassVar[str] = "charts"

    # -- datastores ------------------------------------------------------------------------------
    database_url: str = Field(validation_alias=_alias("CHARTS_DATABASE_URL", "AETHER_DATABASE_URL"))
    database_pool_size: int = Field(default=10, ge=1, le=200)

    # -- events and the live feed (docs/charts.md "The live feed") -------------------------------
    kafka_bootstrap: str = Field(
        validation_alias=_alias("CHARTS_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Kafka topics (and the consumer group) are `<topic_prefix><name>`: empty in production.
    topic_prefix: str = ""
    consumer_group: str = "charts"
    outbox_poll_s: float = Field(default=0.05, gt=0)
    # Live frames for the gateway's market stream: `<stream_prefix>symbol:<SYMBOL>` on Redis.
    redis_url: str = Field(validation_alias=_alias("CHARTS_REDIS_URL", "AETHER_REDIS_URL"))
    stream_prefix: str = "market:stream:"
    # The replayer (replay.py): off unless asked for (`make dev` turns it on).
    replay_enabled: bool = False
    replay_symbols: Annotated[list[str], NoDecode] = ["AAPL", "MSFT", "GOOG", "IBM", "EURUSD"]
    # Wall-clock seconds per stored bar (its four ticks a quarter of that apart).
    replay_bar_s: float = Field(default=1.0, ge=0.01, le=3600)
    # The resolution of an instrument that a real feed brings in first.
    feed_resolution: str = "1m"

    # -- the response cache (cache.py): L1 in this process, L2 on CHARTS_REDIS_URL -----------
    cache_enabled: bool = True
    cache_prefix: str = "charts:cache:"
    cache_ttl_s: int = Field(default=3600, ge=1)
    cache_l1_entries: int = Field(default=512, ge=0)
    cache_timeout_s: float = Field(default=0.2, gt=0)

    # -- bundled history ---------------------------------------------------------------------------
    # Load the bundled datasets at start (in the background; the service serves meanwhile).
    load_bundled: bool = True

    # -- who is calling (tokens verified with auth's JWKS) ------------------------------------
    auth_grpc_target: str = Field(
        validation_alias=_alias("CHARTS_AUTH_GRPC_TARGET", "AETHER_AUTH_GRPC_TARGET")
    )
    auth_timeout_s: float = Field(default=5.0, gt=0)
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)
    # ImportBars: this role or this permission.
    admin_role: str = "admin"
    admin_permission: str = "charts:admin"

    # -- limits (charts.proto states them) ------------------------------------------------------
    default_limit: int = Field(default=500, ge=1)
    max_limit: int = Field(default=10_000, ge=1, le=100_000)
    max_import_rows: int = Field(default=2_000_000, ge=1)

    # -- chart images (RenderChart) -------------------------------------------------------------
    s3_bucket: str = "aether-charts"
    # How long a presigned chart URL stays valid (S3's SigV4 allows at most 7 days).
    render_url_expiry_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # Candles drawn: the default and the most one image may hold.
    render_default_limit: int = Field(default=200, ge=1)
    render_max_limit: int = Field(default=2_000, ge=1, le=10_000)
    # Image size bounds in pixels (both sides), and the default size.
    render_min_side: int = Field(default=200, ge=50)
    render_max_side: int = Field(default=3_000, le=8_000)
    render_default_width: int = 1200
    render_default_height: int = 800
    # Worker processes that draw (render.py says why processes).
    render_workers: int = Field(default=1, ge=1, le=32)

    # -- retention: old bars archived to S3 as Parquet (archive.py) -----------------------------
    # Bars older than an instrument's latest bar minus this many years leave PostgreSQL.
    retention_years: int = Field(default=10, ge=1, le=100)
    archive_bucket: str = "aether-market-archive"
    # Seconds between archive runs; 0: no archiving on this replica (reads still reach it).
    archive_interval_s: float = Field(default=3600.0, ge=0)
    # Archived bars kept in memory for later requests (a few hundred bytes each); 0: none.
    archive_cache_rows: int = Field(default=100_000, ge=0)

    @field_validator("replay_symbols", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        """A comma-separated list from the environment (`AAPL,EURUSD`)."""
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("feed_resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        if value not in RESOLUTIONS:
            raise ValueError(f"CHARTS_FEED_RESOLUTION must be one of {' '.join(RESOLUTIONS)}")
        return value

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.default_limit > self.max_limit:
            raise ValueError("CHARTS_DEFAULT_LIMIT must not exceed CHARTS_MAX_LIMIT")
        if self.render_default_limit > self.render_max_limit:
            raise ValueError("CHARTS_RENDER_DEFAULT_LIMIT must not exceed CHARTS_RENDER_MAX_LIMIT")
        low, high = self.render_min_side, self.render_max_side
        if not low <= self.render_default_width <= high or not (
            low <= self.render_default_height <= high
        ):
            raise ValueError("the default chart size must lie within the render side bounds")
        bad = [symbol for symbol in self.replay_symbols if not SYMBOL.fullmatch(symbol)]
        if bad:
            raise ValueError(f"CHARTS_REPLAY_SYMBOLS: not tickers: {bad}")
        return self
