"""Wire models (pydantic) of `/api/alerts/*` and `/api/notifications/*`: strict requests whose
shapes mirror protos/aether/alerts/v1/alerts.proto (the alerts service checks the rest: a
condition's parameters, the symbol, the quota), answers in the shapes of docs/alerts.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from aether_gateway.ai.schemas import Rfc3339
from aether_gateway.schemas import Request, Response

Condition = Literal[
    "price_above",
    "price_below",
    "crossing_up",
    "crossing_down",
    "entering_channel",
    "exiting_channel",
    "percent_move",
    "rsi_above",
    "rsi_below",
    "macd_cross",
    "price_cross_sma",
    "price_cross_ema",
]
Frequency = Literal["once", "once_per_bar", "every_time"]
Channel = Literal["in_app", "email", "webhook"]
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"]
Status = Literal["active", "paused", "fired", "expired"]
Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")]
ParamName = Literal["lower", "upper", "window_s", "period", "fast", "slow", "signal"]
Number = Annotated[float, Field(allow_inf_nan=False)]


# -- requests ------------------------------------------------------------------------------------
class RuleIn(Request):
    symbol: Symbol
    condition: Condition
    value: Number = Field(default=0.0, description="threshold: a price, a percent, an RSI level")
    interval: Interval | None = Field(default=None, description="indicators and once_per_bar")
    params: dict[ParamName, Number] = Field(
        default_factory=dict, description="lower/upper, window_s, period, fast/slow/signal"
    )
    frequency: Frequency
    cooldown_s: Annotated[int, Field(ge=0, le=30 * 86400)] = 0
    expires_at: Rfc3339 | None = None
    channels: Annotated[list[Channel], Field(min_length=1, max_length=3)]


class RuleUpdateIn(RuleIn):
    version: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="the rule's current version: refused (422) if it changed"
    )


# -- responses -----------------------------------------------------------------------------------
class RuleOut(Response):
    id: str
    symbol: str
    condition: str
    value: float
    interval: str | None
    params: dict[str, float]
    frequency: str
    cooldown_s: int
    expires_at: str | None
    channels: list[str]
    status: str
    version: int
    created_at: str | None
    updated_at: str | None
    last_fired_at: str | None
    last_fired_bar: str | None
    fired_count: int


class RulesOut(Response):
    rules: list[RuleOut] = Field(description="newest first")
    next_cursor: str | None


class DeliveryOut(Response):
    id: str = Field(description="X-Aether-Delivery of a webhook; the id to replay")
    channel: str = Field(description='"in_app", "email" or "webhook:<endpoint id>"')
    status: Literal["pending", "sent", "failed", "retrying"]
    attempts: int
    last_error: str | None = Field(description='why the last attempt failed, e.g. "no_address"')
    next_attempt_at: str | None
    sent_at: str | None


class DeliveriesOut(Response):
    deliveries: list[DeliveryOut] = Field(description="latest change first")
    next_cursor: str | None


class FiringOut(Response):
    id: str
    rule_id: str
    symbol: str
    condition: str
    trigger_id: str
    price: float
    market_time: str | None
    fired_at: str | None
    test: bool
    deliveries: list[DeliveryOut] = Field(description="one per channel (webhooks: per endpoint)")


class FiringsOut(Response):
    firings: list[FiringOut] = Field(description="newest first")
    next_cursor: str | None


class NotificationOut(Response):
    id: str
    rule_id: str
    firing_id: str
    title: str
    body: str
    created_at: str | None
    read_at: str | None


class NotificationsOut(Response):
    notifications: list[NotificationOut]
    next_cursor: str | None


class MarkedOut(Response):
    marked: int


class UnreadOut(Response):
    unread: int


class WebhookIn(Request):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description="http(s); outside dev never a loopback, private or link-local address"
    )


class WebhookOut(Response):
    id: str
    url: str
    created_at: str | None
    rotated_at: str | None
    previous_secret_until: str | None = Field(
        description="until when the previous secret also signs (after a rotation)"
    )


class WebhookSecretOut(WebhookOut):
    secret: str = Field(description="shown once: the HMAC-SHA256 key of X-Aether-Signature")


class WebhooksOut(Response):
    webhooks: list[WebhookOut]
