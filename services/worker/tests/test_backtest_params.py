"""The `backtest` parameters (no I/O): every refusal names its field (the job system answers it as
INVALID_ARGUMENT with that field), defaults per strategy, and a sweep's runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from aether_worker.backtest_params import MAX_RUNS, BacktestParams
from aether_worker.strategies import PARAM_NAMES, STRATEGIES

GOOG_SMA = {"symbol": "GOOG", "strategy": "sma_cross"}


def refusal(fields: dict[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """The one error the fields are refused with: (its location, its message)."""
    with pytest.raises(ValidationError) as caught:
        BacktestParams.model_validate(fields)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return tuple(errors[0]["loc"]), errors[0]["msg"]


@pytest.mark.parametrize(
    ("fields", "loc", "says"),
    [
        ({"strategy": "sma_cross"}, ("symbol",), "Field required"),
        ({**GOOG_SMA, "symbol": "GO OG"}, ("symbol",), "pattern"),
        ({**GOOG_SMA, "strategy": "martingale"}, ("strategy",), "'sma_cross'"),
        ({**GOOG_SMA, "fast": 1}, ("fast",), "fast must be an integer from 2 to 500, not 1"),
        ({**GOOG_SMA, "slow": 501}, ("slow",), "from 2 to 500, not 501"),
        ({**GOOG_SMA, "fast": 40}, ("slow",), "slow must be greater than fast (40)"),
        ({**GOOG_SMA, "fast": 30, "slow": 30}, ("slow",), "greater than fast (30)"),
        ({**GOOG_SMA, "fast": "ten"}, ("fast",), "valid integer"),
        ({**GOOG_SMA, "period": 14}, ("period",), "sma_cross has no parameter period"),
        (
            {"symbol": "GOOG", "strategy": "rsi_reversion", "lower": 80},
            ("upper",),
            "upper must be greater than lower (80)",
        ),
        (
            {"symbol": "GOOG", "strategy": "rsi_reversion", "upper": 100},
            ("upper",),
            "a number from 1 to 99",
        ),
        (
            {"symbol": "GOOG", "strategy": "bollinger_breakout", "stddev": 0.1},
            ("stddev",),
            "a number from 0.5 to 5",
        ),
        (
            {"symbol": "GOOG", "strategy": "macd", "fast": 26},
            ("slow",),
            "slow must be greater than fast (26)",
        ),
        ({**GOOG_SMA, "commission": 0.2}, ("commission",), "less than or equal to 0.1"),
        ({**GOOG_SMA, "commission": -0.01}, ("commission",), "greater than or equal to 0"),
        ({**GOOG_SMA, "cash": 0}, ("cash",), "greater than 0"),
        ({**GOOG_SMA, "interval": "2d"}, ("interval",), "'1d'"),
        ({**GOOG_SMA, "from": "yesterday"}, ("from",), "datetime"),
        ({**GOOG_SMA, "from": "2012-01-01", "to": "2011-01-01"}, ("to",), "after from"),
        ({**GOOG_SMA, "rank_by": "luck"}, ("rank_by",), "'sharpe'"),
        ({**GOOG_SMA, "leverage": 3}, ("leverage",), "Extra inputs"),
        (
            {**GOOG_SMA, "sweep": {"period": [5, 10]}},
            ("sweep", "period"),
            "sma_cross has no parameter period",
        ),
        (
            {**GOOG_SMA, "sweep": {"fast": [1, 5]}},
            ("sweep", "fast"),
            "each value must be an integer from 2 to 500, not 1",
        ),
        ({**GOOG_SMA, "sweep": {"fast": [2.5]}}, ("sweep", "fast"), "an integer"),
        ({**GOOG_SMA, "sweep": {"fast": []}}, ("sweep", "fast"), "at least one value"),
        (
            {**GOOG_SMA, "fast": 5, "sweep": {"fast": [5, 10]}},
            ("sweep", "fast"),
            "both as a fixed value and in the sweep",
        ),
        (
            {**GOOG_SMA, "sweep": {"fast": [50, 60], "slow": [20, 30]}},
            ("sweep",),
            "no combination is valid (slow must be greater than fast)",
        ),
        (
            {**GOOG_SMA, "sweep": {"fast": list(range(2, 42)), "slow": list(range(50, 90))}},
            ("sweep",),
            f"sweep asks for 1600 runs; at most {MAX_RUNS}",
        ),
        (
            {**GOOG_SMA, "sweep": {"fast": list(range(2, 52)), "slow": list(range(100, 150))}},
            ("sweep",),
            f"sweep asks for 2500 runs; at most {MAX_RUNS}",
        ),
    ],
)
def test_a_refusal_names_its_field(fields: dict[str, Any], loc: tuple[str, ...], says: str) -> None:
    where, message = refusal(fields)
    assert where == loc
    assert says in message


def test_the_strategy_defaults_fill_what_is_omitted() -> None:
    params = BacktestParams.model_validate({"symbol": "aapl", "strategy": "rsi_reversion"})

    assert params.symbol == "AAPL"
    assert params.runs() == [{"period": 14, "lower": 30.0, "upper": 70.0}]
    assert (params.interval, params.cash, params.commission) == ("1d", 10_000, 0.0)
    assert params.sweep is None


def test_times_without_a_zone_are_utc_and_dates_are_midnight() -> None:
    params = BacktestParams.model_validate(
        {**GOOG_SMA, "from": "2010-01-01", "to": "2011-06-30T12:00:00+02:00"}
    )

    assert params.start == datetime(2010, 1, 1, tzinfo=UTC)
    assert params.end == datetime(2011, 6, 30, 10, tzinfo=UTC)


def test_a_sweep_runs_the_product_in_order_skipping_what_the_strategy_refuses() -> None:
    params = BacktestParams.model_validate(
        {
            "symbol": "GOOG",
            "strategy": "macd",
            "signal": 5,
            "sweep": {"fast": [5, 30, 5], "slow": [10, 20, 40]},
        }
    )

    assert params.runs() == [
        {"fast": 5, "slow": 10, "signal": 5},
        {"fast": 5, "slow": 20, "signal": 5},
        {"fast": 5, "slow": 40, "signal": 5},
        {"fast": 30, "slow": 40, "signal": 5},
    ]
    assert all(type(run["fast"]) is int for run in params.runs())


def test_the_largest_sweep_allowed() -> None:
    params = BacktestParams.model_validate(
        {
            "symbol": "GOOG",
            "strategy": "bollinger_breakout",
            "sweep": {
                "period": list(range(10, 60)),
                "stddev": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 0.5],
            },
        }
    )
    assert len(params.runs()) == MAX_RUNS


def test_every_strategy_parameter_is_a_field_and_its_defaults_are_valid() -> None:
    fields = set(BacktestParams.model_fields)
    for spec in STRATEGIES.values():
        assert set(spec.param_names) <= fields
        assert spec.order_problem(spec.defaults()) is None
        for param in spec.params:
            assert param.problem(param.default) is None
    assert set(PARAM_NAMES) == {"fast", "slow", "signal", "period", "lower", "upper", "stddev"}
