"""The `backtest` job's parameters, checked before the job is accepted (each error names its
field, which the job system answers as INVALID_ARGUMENT):

    {"symbol": "GOOG", "strategy": "sma_cross", "fast": 10, "slow": 30,
     "from"?: "2010-01-01", "to"?: ..., "interval"?: "1d", "cash"?: 10000, "commission"?: 0.0,
     "sweep"?: {"fast": [5, 10, 20], "slow": [30, 50]}, "rank_by"?: "sharpe"}

The strategy's own parameters (strategies.py) sit beside the others; one that the strategy does
not have is refused, an omitted one takes its default. `sweep` maps parameters of the strategy
to the values to try: the runs are the product of the lists over the fixed parameters, in
order, with the combinations a strategy refuses (fast >= slow) skipped. `runs()` lists them;
its length is what the plan's sweep quota is checked against. Times without a zone are UTC; a
date is its midnight.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aether_worker.candles import Interval, Symbol
from aether_worker.strategies import PARAM_NAMES, STRATEGIES, Param, StrategySpec

StrategyName = Literal["sma_cross", "rsi_reversion", "macd", "bollinger_breakout"]
RankBy = Literal["sharpe", "return"]
# Whatever a plan allows, no job runs more than this (each run's stats are in the result).
MAX_RUNS = 500
MAX_VALUES_PER_PARAM = 50


class BacktestParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    symbol: Symbol
    strategy: StrategyName
    # The strategies' parameters (each strategy takes some of them; strategies.py).
    fast: int | None = None
    slow: int | None = None
    signal: int | None = None
    period: int | None = None
    lower: float | None = None
    upper: float | None = None
    stddev: float | None = None
    start: datetime | None = Field(default=None, alias="from")
    end: datetime | None = Field(default=None, alias="to")
    interval: Interval = "1d"
    cash: float = Field(default=10_000.0, gt=0, le=1e12, allow_inf_nan=False)
    # A fraction of each trade's value, paid on entry and on exit.
    commission: float = Field(default=0.0, ge=0, le=0.1, allow_inf_nan=False)
    sweep: dict[str, list[float]] | None = None
    # The best run of a sweep: the highest Sharpe ratio (a run without one ranks last), or the
    # highest return.
    rank_by: RankBy = "sharpe"

    @property
    def spec(self) -> StrategySpec:
        return STRATEGIES[self.strategy]

    def fixed(self) -> dict[str, float]:
        """The strategy's parameters as given, the omitted ones at their defaults."""
        values = self.spec.defaults()
        for name in self.spec.param_names:
            given = getattr(self, name)
            if given is not None:
                values[name] = given
        return values

    def runs(self) -> list[dict[str, float]]:
        """Each run's strategy parameters, in sweep order (one run without a sweep)."""
        return _runs(self.spec, self.fixed(), self.sweep or {})

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, moment: datetime | None) -> datetime | None:
        return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment

    @model_validator(mode="after")
    def _check(self) -> BacktestParams:
        problems: list[tuple[tuple[str, ...], str, Any]] = []
        spec = self.spec
        for name in PARAM_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            param = spec.param(name)
            if param is None:
                message = f"{self.strategy} has no parameter {name} ({_listed(spec)})"
                problems.append(((name,), message, value))
            elif (why := param.problem(value)) is not None:
                problems.append(((name,), f"{name} {why}", value))
        for name, values in (self.sweep or {}).items():
            fixed = getattr(self, name) if name in PARAM_NAMES else None
            if (why := _sweep_problem(spec, name, values, fixed)) is not None:
                problems.append((("sweep", name), f"sweep.{name}: {why}", values))
        if not problems:
            problems.extend(self._run_problems())
        if self.start is not None and self.end is not None and self.start >= self.end:
            problems.append((("to",), "to must be after from", self.end))
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("invalid_parameter", message),
                        loc=loc,
                        input=value,
                    )
                    for loc, message, value in problems
                ],
            )
        return self

    def _run_problems(self) -> list[tuple[tuple[str, ...], str, Any]]:
        spec = self.spec
        if not self.sweep:
            broken = spec.order_problem(self.fixed())
            if broken is None:
                return []
            field, why = broken
            return [((field,), f"{field} {why}", self.fixed()[field])]
        asked = math.prod(len(set(v)) for v in self.sweep.values())
        if asked > 4 * MAX_RUNS:
            return [(("sweep",), f"sweep asks for {asked} runs; at most {MAX_RUNS}", asked)]
        count = len(self.runs())
        if count == 0:
            ordered = "; ".join(f"{b} must be greater than {a}" for a, b in spec.ordered)
            return [(("sweep",), f"sweep: no combination is valid ({ordered})", self.sweep)]
        if count > MAX_RUNS:
            return [(("sweep",), f"sweep asks for {count} runs; at most {MAX_RUNS}", count)]
        return []


def _sweep_problem(
    spec: StrategySpec, name: str, values: list[float], fixed: float | None
) -> str | None:
    param = spec.param(name)
    if param is None:
        return f"{spec.name} has no parameter {name} ({_listed(spec)})"
    if fixed is not None:
        return f"{name} is given both as a fixed value and in the sweep"
    if not values:
        return "give at least one value"
    if len(values) > MAX_VALUES_PER_PARAM:
        return f"at most {MAX_VALUES_PER_PARAM} values"
    for value in values:
        if (why := param.problem(value)) is not None:
            return f"each value {why}"
    return None


def _runs(
    spec: StrategySpec, fixed: dict[str, float], sweep: dict[str, list[float]]
) -> list[dict[str, float]]:
    params = [_param(spec, name) for name in sweep]
    names = [p.name for p in params]
    # Repeated values would repeat runs: each value once, in the order given.
    choices = [list(dict.fromkeys(p.coerce(v) for v in sweep[p.name])) for p in params]
    out = []
    for combination in itertools.product(*choices):
        values = fixed | dict(zip(names, combination, strict=True))
        if spec.order_problem(values) is None:
            out.append(values)
    return out


def _param(spec: StrategySpec, name: str) -> Param:
    param = spec.param(name)
    if param is None:  # the validator refused such a sweep
        raise KeyError(f"{spec.name} has no parameter {name}")
    return param


def _listed(spec: StrategySpec) -> str:
    return f"its parameters: {', '.join(spec.param_names)}"
