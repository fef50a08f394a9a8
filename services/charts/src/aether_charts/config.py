"""The charts service's settings (env prefix `CHARTS_`; the devstack's `AETHER_*` names also work).

Required values have no default: PostgreSQL and the gRPC address of auth (the JWKS that
verifies callers' tokens).
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from aether_common.settings import AetherSettings


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class ChartsSettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="CHARTS_")

    service_name: ClassVar[str] = "charts"

    # -- datastores ------------------------------------------------------------------------------
    database_url: str = Field(validation_alias=_alias("CHARTS_DATABASE_URL", "AETHER_DATABASE_URL"))
    database_pool_size: int = Field(default=10, ge=1, le=200)

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

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.default_limit > self.max_limit:
            raise ValueError("CHARTS_DEFAULT_LIMIT must not exceed CHARTS_MAX_LIMIT")
        return self
