from __future__ import annotations

import numpy as np
import pytest
import talib

from aether_charts import indicators as ind
from aether_charts.indicators import Bars

RNG = np.random.default_rng(11)


def walk(count: int, bars_per_session: int = 390) -> Bars:
    """A labelled synthetic random walk (tests only)."""
    close = 100 * np.exp(np.cumsum(RNG.normal(0, 0.01, count)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(RNG.normal(0, 0.005, count)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = RNG.integers(1_000, 100_000, count).astype(np.float64)
    return Bars(open_, high, low, close, volume, np.arange(count) // bars_per_session)


def test_parse_reads_names_params_and_defaults() -> None:
    parsed = ind.parse("sma:20, EMA:50,rsi,macd:12:26:9,bbands:20:2.5,stoch,vwap,obv")
    assert [i.key for i in parsed] == [
        "sma:20",
        "ema:50",
        "rsi:14",
        "macd:12:26:9",
        "bbands:20:2.5",
        "stoch:14:3:3",
        "vwap",
        "obv",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one"),
        ("foo:3", "foo:3: unknown indicator"),
        ("sma:20:5", "sma:20:5: sma takes at most 1"),
        ("sma:x", "sma:x: timeperiod must be a number"),
        ("sma:2.5", "must be a whole number"),
        ("rsi:1", "rsi:1: timeperiod must be within 2-1000"),
        ("macd:26:12", "fast period must be shorter"),
        ("sma:20,sma:20", "named twice"),
        (",".join(f"sma:{n}" for n in range(2, 14)), "at most 10"),
    ],
)
def test_bad_requests_are_refused_naming_the_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ind.parse(text)


def test_values_equal_ta_lib_called_directly() -> None:
    bars = walk(600)
    expected = {
        "sma:20": {"sma": talib.SMA(bars.close, 20)},
        "rsi:14": {"rsi": talib.RSI(bars.close, 14)},
        "atr:14": {"atr": talib.ATR(bars.high, bars.low, bars.close, 14)},
        "macd:12:26:9": dict(
            zip(("macd", "signal", "histogram"), talib.MACD(bars.close, 12, 26, 9), strict=True)
        ),
        "bbands:20:2": dict(
            zip(("upper", "middle", "lower"), talib.BBANDS(bars.close, 20, 2, 2), strict=True)
        ),
        "stoch:14:3:3": dict(
            zip(
                ("k", "d"),
                talib.STOCH(bars.high, bars.low, bars.close, 14, 3, ind.SMA, 3, ind.SMA),
                strict=True,
            )
        ),
    }
    for indicator in ind.parse(",".join(expected)):
        got = ind.compute(indicator, bars, 0)
        for name, values in expected[indicator.key].items():
            np.testing.assert_array_equal(got[name], values)


@pytest.mark.parametrize("name", sorted(ind.CATALOG))
def test_a_window_does_not_depend_on_where_its_history_starts(name: str) -> None:
    """With warmup_bars of history before the window, the window's values are those computed
    over the whole history (to CONVERGED precision for the exponential ones)."""
    bars = walk(3000)
    (indicator,) = ind.parse(name if name in ("vwap", "obv") else f"{name}:{_second(name)}")
    window = 2500
    full = ind.compute(indicator, bars, window)
    start = max(0, window - ind.warmup_bars([indicator]))
    assert start > 0
    # VWAP needs its session's start too: the service fetches from there.
    if name == "vwap":
        start = min(start, int(np.flatnonzero(bars.session == bars.session[window])[0]))
    short = ind.compute(indicator, bars.tail(start), window - start)
    for output, values in full.items():
        assert not np.isnan(values).any(), output
        np.testing.assert_allclose(short[output], values, rtol=1e-6, err_msg=output)


def _second(name: str) -> str:
    """A non-default first parameter, so defaults are not all that is tested."""
    return {"macd": "8:21:5", "bbands": "30:2", "stoch": "9:3:3"}.get(name, "30")


def test_vwap_restarts_each_session_and_obv_starts_at_zero() -> None:
    bars = walk(10, bars_per_session=4)
    (vwap,) = ind.compute(ind.parse("vwap")[0], bars, 0).values()
    typical = (bars.high + bars.low + bars.close) / 3
    for begin in (0, 4, 8):
        end = min(begin + 4, 10)
        w, v = typical[begin:end] * bars.volume[begin:end], bars.volume[begin:end]
        np.testing.assert_allclose(vwap[begin:end], np.cumsum(w) / np.cumsum(v))
    (obv,) = ind.compute(ind.parse("obv")[0], bars, 3).values()
    assert obv[0] == 0
    np.testing.assert_array_equal(
        obv,
        talib.OBV(bars.close[3:], bars.volume[3:]) - talib.OBV(bars.close[3:], bars.volume[3:])[0],
    )
