"""Indicator conditions on two closed bars' values (engine_indicators.py)."""

from __future__ import annotations

import math

import pytest

from aether_alerts.engine_indicators import IndicatorRule, Reading, fires

NAN = math.nan
MACD, SIGNAL = ("macd:12:26:9", "macd"), ("macd:12:26:9", "signal")


def rule(condition: str, value: float = 0.0, **params: float) -> IndicatorRule:
    return IndicatorRule("r", "X", "1d", condition, value, params)


@pytest.mark.parametrize(
    ("condition", "value", "outputs", "closes", "expected"),
    [
        ("rsi_above", 70, {("rsi:14", "rsi"): (60, 71)}, (1, 1), True),
        ("rsi_above", 70, {("rsi:14", "rsi"): (60, 70)}, (1, 1), False),  # above, not at
        ("rsi_below", 30, {("rsi:14", "rsi"): (40, 29)}, (1, 1), True),
        ("rsi_below", 30, {("rsi:14", "rsi"): (40, NAN)}, (1, 1), False),  # too little history
        ("macd_cross", 0, {MACD: (1, 3), SIGNAL: (2, 2)}, (1, 1), True),  # up through it
        ("macd_cross", 0, {MACD: (3, 1), SIGNAL: (2, 2)}, (1, 1), True),  # down through it
        ("macd_cross", 0, {MACD: (3, 4), SIGNAL: (2, 2)}, (1, 1), False),
        ("price_cross_sma", 0, {("sma:20", "sma"): (100, 100)}, (99, 101), True),
        ("price_cross_sma", 0, {("sma:20", "sma"): (100, 100)}, (100, 101), True),  # a touch
        ("price_cross_sma", 0, {("sma:20", "sma"): (100, 100)}, (101, 102), False),
        ("price_cross_ema", 0, {("ema:20", "ema"): (100, 100)}, (101, 99), True),
    ],
)
def test_conditions(
    condition: str,
    value: float,
    outputs: dict[tuple[str, str], tuple[float, float]],
    closes: tuple[float, float],
    expected: bool,
) -> None:
    assert fires(rule(condition, value), Reading(closes, outputs)) is expected


def test_specs_fill_in_the_defaults() -> None:
    assert rule("rsi_above", 70).spec() == "rsi:14"
    assert rule("macd_cross", fast=5).spec() == "macd:5:26:9"
    assert rule("price_cross_ema", period=50).spec() == "ema:50"
