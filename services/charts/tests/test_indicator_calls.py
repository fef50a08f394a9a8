"""GetIndicators, ListIndicators and GetQuote over the bundled history: indicators aligned to
GetCandles, equal to TA-Lib called directly on the whole history's candles, warmed up so a
window's values do not depend on where it starts; VWAP anchored to the session; quotes of a daily
and an hourly symbol; the refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
import pytest
import talib
from google.protobuf import timestamp_pb2

from aether.charts.v1 import charts_pb2
from aether_charts import indicators as ind
from aether_devstack.testkit import failure

ALL = "sma:20,ema:50,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch,vwap,obv"


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def indicators(charts: Any, symbol: str, **fields: Any) -> charts_pb2.GetIndicatorsResponse:
    answer: charts_pb2.GetIndicatorsResponse = await charts.stub.GetIndicators(
        charts_pb2.GetIndicatorsRequest(symbol=symbol, **fields), metadata=charts.auth("reader")
    )
    return answer


def series(answer: charts_pb2.GetIndicatorsResponse) -> dict[tuple[str, str], np.ndarray]:
    return {(s.indicator, s.output): np.array(s.values) for s in answer.series}


def arrays(candles: list[charts_pb2.Candle]) -> dict[str, np.ndarray]:
    return {
        name: np.array([getattr(c, name) for c in candles], dtype=np.float64)
        for name in ("open", "high", "low", "close", "volume")
    }


async def test_daily_indicators_equal_ta_lib_over_the_whole_history(bundled: Any) -> None:
    window = {"interval": "1d", "from": ts(datetime(2010, 1, 1, tzinfo=UTC))}
    window["to"] = ts(datetime(2011, 1, 1, tzinfo=UTC))
    answer = await indicators(bundled, "AAPL", indicators=ALL, limit=1000, **window)
    page = await bundled.candles("AAPL", limit=1000, **window)
    assert [t.ToDatetime() for t in answer.times] == [c.time.ToDatetime() for c in page.candles]
    assert len(answer.times) == 252

    history = await bundled.all_candles("AAPL", interval="1d", to=window["to"], limit=10_000)
    start = len(history) - len(page.candles)  # the window is the history's tail
    a = arrays(history)
    o, h, lo, c, v = a["open"], a["high"], a["low"], a["close"], a["volume"]
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    k, d = talib.STOCH(h, lo, c, 14, 3, ind.SMA, 3, ind.SMA)
    expected = {
        ("sma:20", "sma"): talib.SMA(c, 20),
        ("ema:50", "ema"): talib.EMA(c, 50),
        ("rsi:14", "rsi"): talib.RSI(c, 14),
        ("macd:12:26:9", "macd"): macd,
        ("macd:12:26:9", "signal"): signal,
        ("macd:12:26:9", "histogram"): hist,
        ("bbands:20:2", "upper"): upper,
        ("bbands:20:2", "middle"): middle,
        ("bbands:20:2", "lower"): lower,
        ("atr:14", "atr"): talib.ATR(h, lo, c, 14),
        ("stoch:14:3:3", "k"): k,
        ("stoch:14:3:3", "d"): d,
        # Daily candles are each their own session: VWAP is the typical price.
        ("vwap", "vwap"): (h + lo + c) / 3,
        # From 0 at the window's first candle.
        ("obv", "obv"): talib.OBV(c[start:], v[start:]) - talib.OBV(c[start:], v[start:])[0],
    }
    got = series(answer)
    assert set(got) == set(expected)
    assert o.size == c.size
    for key, values in expected.items():
        tail = values if key[0] == "obv" else values[start:]
        np.testing.assert_allclose(got[key], tail, rtol=1e-6, err_msg=str(key))


async def test_intraday_vwap_starts_at_the_session_before_the_window(bundled: Any) -> None:
    """EURUSD hourly (UTC sessions): a window starting at noon still averages from midnight."""
    noon = datetime(2017, 6, 1, 12, tzinfo=UTC)  # the data has every hour of that day
    answer = await indicators(
        bundled, "EURUSD", interval="1h", indicators="vwap", limit=6, **{"from": ts(noon)}
    )
    day = await bundled.candles(
        "EURUSD", interval="1h", limit=24, **{"from": ts(noon.replace(hour=0))}
    )
    a = arrays(list(day.candles))
    typical = (a["high"] + a["low"] + a["close"]) / 3
    cumulative = np.cumsum(typical * a["volume"]) / np.cumsum(a["volume"])
    hours = [c.time.ToDatetime().hour for c in day.candles]
    assert hours == list(range(24))
    assert [t.ToDatetime().hour for t in answer.times] == list(range(12, 18))
    np.testing.assert_allclose(series(answer)[("vwap", "vwap")], cumulative[12:18])


async def test_unknown_indicators_are_refused_and_the_catalog_lists_them(bundled: Any) -> None:
    refused = await failure(indicators(bundled, "AAPL", indicators="sma:20,foo"))
    assert refused.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "foo: unknown indicator" in refused.detail
    refused = await failure(indicators(bundled, "AAPL", indicators="rsi:1"))
    assert "rsi:1: timeperiod must be within 2-1000" in refused.detail
    missing = await failure(indicators(bundled, "NOPE", indicators="sma"))
    assert missing.grpc_code == grpc.StatusCode.NOT_FOUND

    catalog = await bundled.stub.ListIndicators(
        charts_pb2.ListIndicatorsRequest(), metadata=bundled.auth("reader")
    )
    by_name = {i.name: i for i in catalog.indicators}
    assert set(by_name) == set(ind.CATALOG)
    assert [p.name for p in by_name["macd"].params] == ["fast", "slow", "signal"]
    assert list(by_name["bbands"].outputs) == ["upper", "middle", "lower"]
    assert by_name["sma"].placement == "overlay"


async def test_quote_of_a_daily_and_an_hourly_symbol(bundled: Any) -> None:
    """The last bar's close, the change from the close before its session, and the session's
    range: AAPL's last day is one bar; EURUSD's last day (UTC) is many hourly bars."""
    daily = await bundled.all_candles("AAPL", interval="1d", limit=10_000)
    quote = await bundled.stub.GetQuote(
        charts_pb2.GetQuoteRequest(symbol="aapl"), metadata=bundled.auth("reader")
    )
    last, before = daily[-1], daily[-2]
    assert (quote.symbol, quote.timezone) == ("AAPL", "America/New_York")
    assert quote.time == last.time
    assert quote.session_start == last.time
    assert (quote.price, quote.previous_close) == (last.close, before.close)
    assert quote.change == pytest.approx(last.close - before.close)
    assert quote.change_percent == pytest.approx(100 * (last.close / before.close - 1))
    assert (quote.day_open, quote.day_high, quote.day_low, quote.day_volume) == (
        last.open,
        last.high,
        last.low,
        last.volume,
    )

    hourly = await bundled.all_candles("EURUSD", interval="1h", limit=10_000)
    fx = await bundled.stub.GetQuote(
        charts_pb2.GetQuoteRequest(symbol="EURUSD"), metadata=bundled.auth("reader")
    )
    day = fx.session_start.ToDatetime().date()
    session = [c for c in hourly if c.time.ToDatetime().date() == day]
    earlier = [c for c in hourly if c.time.ToDatetime().date() < day]
    assert fx.session_start.ToDatetime().hour == 0
    assert fx.price == session[-1].close
    assert fx.previous_close == earlier[-1].close
    assert fx.day_open == session[0].open
    assert fx.day_high == max(c.high for c in session)
    assert fx.day_low == min(c.low for c in session)
    assert fx.day_volume == pytest.approx(sum(c.volume for c in session))

    missing = await failure(
        bundled.stub.GetQuote(
            charts_pb2.GetQuoteRequest(symbol="NOPE"), metadata=bundled.auth("reader")
        )
    )
    assert missing.grpc_code == grpc.StatusCode.NOT_FOUND
