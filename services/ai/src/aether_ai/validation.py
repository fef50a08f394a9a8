"""Request checks, as ai.proto states them: every refusal is INVALID_ARGUMENT with a message
that says what to fix (and a field error)."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Collection, Sequence

from aether_ai.analysis import Bars, columns
from aether_ai.config import AUTO, KNOWLEDGE, NAMESPACES
from aether_ai.market import INTERVALS
from aether_ai.records import Bar
from aether_common.errors import ValidationFailed

SYMBOL = re.compile(r"[A-Z0-9.^=\-]{1,16}")
MIN_BARS, MAX_BARS = 2, 5000
MIN_AGENTS, MAX_AGENTS = 2, 4
MAX_SEARCH_QUERY = 2000
SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX = 5, 20


def _bad(field: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, field_errors={field: detail})


def text(value: str, *, field: str, max_chars: int) -> str:
    """Trimmed, 1..max_chars characters."""
    trimmed = value.strip()
    if not trimmed:
        raise _bad(field, f"{field} must not be empty")
    if len(trimmed) > max_chars:
        raise _bad(field, f"{field} is {len(trimmed)} characters; at most {max_chars} are allowed")
    return trimmed


def optional_text(value: str, *, field: str, max_chars: int) -> str:
    """Trimmed, 0..max_chars characters."""
    trimmed = value.strip()
    return text(trimmed, field=field, max_chars=max_chars) if trimmed else ""


def mode(name: str, modes: Collection[str], *, allow_auto: bool = True) -> str:
    if name == AUTO and allow_auto:
        return name
    if name not in modes:
        known = ([AUTO] if allow_auto else []) + sorted(modes)
        raise _bad("mode", f"unknown mode {name!r}; one of: {', '.join(known)}")
    return name


def model(name: str, models: Collection[str]) -> str:
    if name and name not in models:
        raise _bad("model", f"unknown model {name!r}; one of: {', '.join(sorted(models))}")
    return name


def agents(names: Sequence[str], modes: Collection[str]) -> list[str]:
    """2-4 distinct modes ("auto" is not an agent)."""
    chosen = list(names)
    if not MIN_AGENTS <= len(chosen) <= MAX_AGENTS:
        raise _bad("agents", f"agents must name {MIN_AGENTS}-{MAX_AGENTS} modes, not {len(chosen)}")
    if len(set(chosen)) != len(chosen):
        raise _bad("agents", "agents must be distinct modes")
    for name in chosen:
        if name not in modes:
            raise _bad("agents", f"unknown agent mode {name!r}; one of: {', '.join(sorted(modes))}")
    return chosen


def conversation_id(value: str) -> str:
    if not value:
        return value
    try:
        uuid.UUID(value)
    except ValueError:
        raise _bad("conversation_id", "conversation_id must be a UUID") from None
    return value


def bounded(value: int, *, field: str, default: int, low: int, high: int) -> int:
    """0 -> default; else low..high."""
    if value == 0:
        return default
    if not low <= value <= high:
        raise _bad(field, f"{field} must be {low}-{high} (0 for {default}), not {value}")
    return value


# -- analyze ------------------------------------------------------------------------------------
def interval(value: str) -> str:
    """A charts interval (analysis by symbol)."""
    if value not in INTERVALS:
        raise _bad("interval", f"interval must be one of {' '.join(INTERVALS)} (got {value!r})")
    return value


def symbol(value: str) -> str:
    upper = value.strip().upper()
    if not SYMBOL.fullmatch(upper):
        raise _bad("symbol", "symbol must be 1-16 characters of A-Z 0-9 . ^ = -")
    return upper


def bars(values: Sequence[Bar]) -> Bars:
    if not MIN_BARS <= len(values) <= MAX_BARS:
        raise _bad("bars", f"bars must hold {MIN_BARS}-{MAX_BARS} bars, not {len(values)}")
    rows: list[tuple[float, float, float, float, float, float]] = []
    previous: float | None = None
    for index, bar in enumerate(values):
        where = f"bars[{index}]"
        when = bar.time
        if when is None:
            raise _bad(where, f"{where}.time is required")
        if previous is not None and when <= previous:
            raise _bad(where, f"{where}: bars must be in time order (strictly increasing times)")
        previous = when
        prices = (bar.open, bar.high, bar.low, bar.close)
        if not all(math.isfinite(p) and p > 0 for p in prices):
            raise _bad(where, f"{where}: open, high, low and close must be positive numbers")
        if not (math.isfinite(bar.volume) and bar.volume >= 0):
            raise _bad(where, f"{where}: volume must be >= 0")
        if bar.high < max(bar.open, bar.close):
            raise _bad(where, f"{where}: high must be >= max(open, close)")
        if bar.low > min(bar.open, bar.close):
            raise _bad(where, f"{where}: low must be <= min(open, close)")
        rows.append((when, bar.open, bar.high, bar.low, bar.close, bar.volume))
    return columns(rows)


# -- search -------------------------------------------------------------------------------------
def namespace(value: str) -> str:
    name = value or KNOWLEDGE
    if name not in NAMESPACES:
        raise _bad("namespace", f"namespace must be one of {', '.join(NAMESPACES)}, not {name!r}")
    return name
