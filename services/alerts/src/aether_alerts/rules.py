"""What an alert rule is: its record (`Rule`, what the engine reads) and the rules a definition
must follow (`validate`; docs/alerts.md "Rules").

Conditions on prices compare a tick's price with `value`; channel conditions use
`params.lower`/`params.upper`; indicator conditions are evaluated on bar closes of `interval`
with charts' indicator values, so they need an interval. Everything here is pure: the symbol's
existence (charts) and the quota (the database) are checked by the service.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from aether_common.errors import ValidationFailed


class Status(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    FIRED = "fired"
    EXPIRED = "expired"


class Frequency(StrEnum):
    ONCE = "once"
    ONCE_PER_BAR = "once_per_bar"
    EVERY_TIME = "every_time"


CHANNELS = ("in_app", "email", "webhook")
INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M")
SYMBOL_MAX = 32


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition's parameters: required keys with their bounds (inclusive), defaults for the
    optional ones, whether `value` is a price (> 0), a level in [0, 100], a percent (> 0) or
    unused, and whether it needs an interval (indicators)."""

    name: str
    value: str  # "price" | "level" | "percent" | "none"
    params: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    defaults: Mapping[str, float] = field(default_factory=dict)
    integer_params: frozenset[str] = frozenset()
    needs_interval: bool = False


_PERIOD = (2.0, 500.0)
CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("price_above", "price"),
        Condition("price_below", "price"),
        Condition("crossing_up", "price"),
        Condition("crossing_down", "price"),
        Condition("entering_channel", "none", {"lower": (0.0, math.inf), "upper": (0.0, math.inf)}),
        Condition("exiting_channel", "none", {"lower": (0.0, math.inf), "upper": (0.0, math.inf)}),
        # value: the move in percent (either direction) within window_s seconds of market time.
        Condition(
            "percent_move",
            "percent",
            {"window_s": (1.0, 30 * 86400.0)},
            integer_params=frozenset({"window_s"}),
        ),
        Condition(
            "rsi_above",
            "level",
            {"period": _PERIOD},
            {"period": 14},
            frozenset({"period"}),
            needs_interval=True,
        ),
        Condition(
            "rsi_below",
            "level",
            {"period": _PERIOD},
            {"period": 14},
            frozenset({"period"}),
            needs_interval=True,
        ),
        Condition(
            "macd_cross",
            "none",
            {"fast": _PERIOD, "slow": _PERIOD, "signal": (1.0, 500.0)},
            {"fast": 12, "slow": 26, "signal": 9},
            frozenset({"fast", "slow", "signal"}),
            needs_interval=True,
        ),
        Condition(
            "price_cross_sma",
            "none",
            {"period": _PERIOD},
            {"period": 20},
            frozenset({"period"}),
            needs_interval=True,
        ),
        Condition(
            "price_cross_ema",
            "none",
            {"period": _PERIOD},
            {"period": 20},
            frozenset({"period"}),
            needs_interval=True,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A definition as the user sent it (before validation)."""

    symbol: str
    condition: str
    value: float
    params: Mapping[str, float]
    interval: str
    frequency: str
    cooldown_s: int
    expires_at: datetime | None
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """A stored rule: every column, as the API answers it and the engine evaluates it."""

    id: str
    user_id: str
    symbol: str
    condition: str
    value: float
    params: Mapping[str, float]
    interval: str
    frequency: Frequency
    cooldown_s: int
    expires_at: datetime | None
    channels: tuple[str, ...]
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime
    last_fired_at: datetime | None
    last_fired_bar: datetime | None
    fired_count: int

    def spec(self) -> RuleSpec:
        return RuleSpec(
            symbol=self.symbol,
            condition=self.condition,
            value=self.value,
            params=self.params,
            interval=self.interval,
            frequency=self.frequency.value,
            cooldown_s=self.cooldown_s,
            expires_at=self.expires_at,
            channels=self.channels,
        )


@dataclass(frozen=True, slots=True)
class Limits:
    min_cooldown_s: int
    max_cooldown_s: int = 30 * 86400
    max_value: float = 1e12


def validate(spec: RuleSpec, *, now: datetime, limits: Limits) -> RuleSpec:
    """The definition normalised (symbol upper case, defaults filled in, channels deduplicated),
    or ValidationFailed naming every bad field."""
    errors: dict[str, str] = {}
    symbol = spec.symbol.strip().upper()
    if not symbol or len(symbol) > SYMBOL_MAX or not all(c.isalnum() or c in ".-" for c in symbol):
        errors["symbol"] = "a ticker such as AAPL (letters, digits, '.', '-'; at most 32)"
    condition = CONDITIONS.get(spec.condition)
    params: dict[str, float] = {}
    if condition is None:
        errors["condition"] = f"unknown condition; one of {', '.join(CONDITIONS)}"
    else:
        params = _params(condition, spec, errors)
        _value(condition, spec.value, limits, errors)
    interval = spec.interval.strip()
    if interval and interval not in INTERVALS:
        errors["interval"] = f"one of {' '.join(INTERVALS)}"
    try:
        frequency = Frequency(spec.frequency)
    except ValueError:
        errors["frequency"] = "one of once, once_per_bar, every_time"
        frequency = None
    needs_interval = (condition is not None and condition.needs_interval) or (
        frequency is Frequency.ONCE_PER_BAR
    )
    if needs_interval and not interval and "interval" not in errors:
        indicator = condition is not None and condition.needs_interval
        why = "this condition" if indicator else "once_per_bar"
        errors["interval"] = f"required by {why} (one of {' '.join(INTERVALS)})"
    cooldown = spec.cooldown_s
    if frequency is Frequency.EVERY_TIME:
        if not limits.min_cooldown_s <= cooldown <= limits.max_cooldown_s:
            errors["cooldown_s"] = (
                f"every_time needs a cool-down of {limits.min_cooldown_s} to "
                f"{limits.max_cooldown_s} seconds"
            )
    elif cooldown != 0:
        errors["cooldown_s"] = "only every_time takes a cool-down"
    if spec.expires_at is not None and spec.expires_at <= now:
        errors["expires_at"] = "must be in the future"
    channels = tuple(dict.fromkeys(spec.channels))
    unknown = [c for c in channels if c not in CHANNELS]
    if not channels or unknown:
        errors["channels"] = f"a non-empty subset of {', '.join(CHANNELS)}"
    if errors:
        first = next(iter(errors.items()))
        raise ValidationFailed(f"{first[0]}: {first[1]}", field_errors=errors)
    return RuleSpec(
        symbol=symbol,
        condition=spec.condition,
        value=float(spec.value),
        params=params,
        interval=interval,
        frequency=spec.frequency,
        cooldown_s=cooldown,
        expires_at=spec.expires_at,
        channels=channels,
    )


def _params(condition: Condition, spec: RuleSpec, errors: dict[str, str]) -> dict[str, float]:
    unknown = sorted(set(spec.params) - set(condition.params))
    if unknown:
        allowed = ", ".join(condition.params) or "none"
        errors["params"] = f"{condition.name} takes no {', '.join(unknown)} (params: {allowed})"
        return {}
    out: dict[str, float] = dict(condition.defaults)
    for key, (low, high) in condition.params.items():
        if key not in spec.params:
            if key not in out:
                errors[f"params.{key}"] = f"required by {condition.name}"
            continue
        value = spec.params[key]
        if (
            not math.isfinite(value)
            or not low <= value <= high
            or (key in condition.integer_params and value != int(value))
        ):
            kind = "a whole number" if key in condition.integer_params else "a number"
            errors[f"params.{key}"] = f"{kind} in [{low:g}, {high:g}]"
            continue
        out[key] = value
    channel = condition.name.endswith("_channel") and "lower" in out and "upper" in out
    if channel and not 0 < out["lower"] < out["upper"]:
        errors["params"] = "a channel needs 0 < lower < upper"
    if condition.name == "macd_cross" and out.get("fast", 0) >= out.get("slow", math.inf):
        errors["params"] = "macd_cross needs fast < slow"
    return out


def _value(condition: Condition, value: float, limits: Limits, errors: dict[str, str]) -> None:
    if not math.isfinite(value):
        errors["value"] = "a finite number"
    elif condition.value == "price" and not 0 < value <= limits.max_value:
        errors["value"] = "a price above 0"
    elif condition.value == "level" and not 0 < value < 100:
        errors["value"] = "an RSI level between 0 and 100"
    elif condition.value == "percent" and not 0 < value <= 1000:
        errors["value"] = "a move in percent, above 0 and at most 1000"
    elif condition.value == "none" and value != 0:
        errors["value"] = f"{condition.name} takes no value (its params define it)"


def row_to_rule(row: Any) -> Rule:
    """A `rules` row (asyncpg Record, jsonb decoded) as a Rule."""
    return Rule(
        id=str(row["id"]),
        user_id=row["user_id"],
        symbol=row["symbol"],
        condition=row["condition"],
        value=row["value"],
        params={k: float(v) for k, v in (row["params"] or {}).items()},
        interval=row["interval"],
        frequency=Frequency(row["frequency"]),
        cooldown_s=row["cooldown_s"],
        expires_at=row["expires_at"],
        channels=tuple(row["channels"]),
        status=Status(row["status"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_fired_at=row["last_fired_at"],
        last_fired_bar=row["last_fired_bar"],
        fired_count=row["fired_count"],
    )
