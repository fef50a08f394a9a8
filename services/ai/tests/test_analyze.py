"""Analyze: bars validated as ai.proto says, a technical summary in the stock_analysis prompt,
streamed like Chat."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest
import talib
from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_common.grpc import create_channel
from aether_devstack.testkit import failure


def bar(day: int, close: float, *, spread: float = 1.0, volume: float = 1000.0) -> ai_pb2.Bar:
    when = Timestamp()
    when.FromDatetime(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day))
    return ai_pb2.Bar(
        time=when,
        open=close - 0.2,
        high=close + spread,
        low=close - spread,
        close=close,
        volume=volume,
    )


def series(count: int) -> list[ai_pb2.Bar]:
    """A trending, oscillating series (deterministic)."""
    return [bar(day, 100 + day * 0.3 + 4 * math.sin(day / 3)) for day in range(count)]


async def test_analyze_streams_an_answer_over_the_bars(ai: Any, kit: Any) -> None:
    user = ai.user()
    events = await ai.analyze(
        user, symbol="aapl", bars=series(60), question="Is the trend up?", no_cache=True
    )

    kinds = kit.kinds(events)
    assert kinds[0] == "started"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"chunk"}
    started, done = events[0].started, events[-1].done
    assert started.mode == "stock_analysis"
    assert started.model == "large"
    assert started.conversation_id == ""
    assert done.answer == kit.text_of(events)
    assert done.usage.completion_tokens > 0
    # The summary went into the prompt: far more prompt than the question alone.
    assert done.usage.prompt_tokens > 80
    usage = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=ai.auth(user))
    assert usage.requests == 1
    assert usage.days[0].model == "large"

    whole = await ai.analyze_whole(user, symbol="aapl", bars=series(60), question="Trend up?")
    assert whole.started.mode == "stock_analysis"
    assert whole.done.answer.strip()


async def test_analyze_refuses_bad_bars_with_a_message(ai: Any, kit: Any) -> None:
    user = ai.user()
    good = series(3)
    high_too_low = series(3)
    high_too_low[1].high = high_too_low[1].close - 0.5
    low_too_high = series(3)
    low_too_high[2].low = low_too_high[2].open + 0.5
    negative_volume = series(3)
    negative_volume[0].volume = -1
    unordered = [good[1], good[0], good[2]]
    no_time = series(2)
    no_time[1].ClearField("time")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"symbol": "AAPL", "bars": series(1)}, "2-5000"),
        ({"symbol": "AAPL", "bars": series(5001)}, "2-5000"),
        ({"symbol": "AAPL", "bars": high_too_low}, "high"),
        ({"symbol": "AAPL", "bars": low_too_high}, "low"),
        ({"symbol": "AAPL", "bars": negative_volume}, "volume"),
        ({"symbol": "AAPL", "bars": unordered}, "time order"),
        ({"symbol": "AAPL", "bars": no_time}, "time"),
        ({"symbol": "", "bars": good}, "symbol"),
        ({"symbol": "AA PL", "bars": good}, "symbol"),
        ({"symbol": "A" * 17, "bars": good}, "symbol"),
        ({"symbol": "AAPL", "bars": good, "question": "?" * 2001}, "2000"),
        ({"symbol": "AAPL", "bars": good, "model": "gpt-99"}, "unknown model"),
    ]
    for fields, words in cases:
        error = await kit.stream_failure(
            ai.stub.Analyze(ai_pb2.AnalyzeRequest(**fields), metadata=ai.auth(user))
        )
        assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT, words
        assert words in error.detail, (words, error.detail)


async def test_analyze_by_symbol_reads_candles_and_indicators_from_charts(
    start_ai: Any, charts_target: str, kit: Any
) -> None:
    """No bars sent: the last 250 daily candles of the symbol from charts, and charts' own
    TA-Lib SMA/RSI in the summary (the numbers its charts show)."""
    ai = await start_ai(charts_grpc_target=charts_target)
    user = ai.user()
    recent = await ai.app.market.recent("ACME", "1d", 250, token=ai.token(user))
    assert len(recent.bars.close) == 250

    async with create_channel(charts_target) as channel:
        charts: Any = charts_pb2_grpc.ChartsServiceStub(channel)
        every = await charts.GetCandles(
            charts_pb2.GetCandlesRequest(symbol="ACME", limit=1000), metadata=ai.auth(user)
        )
    close = np.array([c.close for c in every.candles])
    assert len(close) == 300
    np.testing.assert_allclose(recent.bars.close, close[-250:])
    assert recent.sma20 == pytest.approx(talib.SMA(close, 20)[-1])
    assert recent.sma50 == pytest.approx(talib.SMA(close, 50)[-1])
    assert recent.rsi14 == pytest.approx(talib.RSI(close, 14)[-1], rel=1e-6)

    events = await ai.analyze(user, symbol="acme", question="Trend?", no_cache=True)
    assert kit.kinds(events)[-1] == "done"
    assert events[-1].done.usage.prompt_tokens > 80


async def test_analyze_by_symbol_refusals(start_ai: Any, charts_target: str) -> None:
    without_charts = await start_ai()
    user = without_charts.user()
    error = await failure(without_charts.analyze(user, symbol="ACME"))
    assert error.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert "charts" in error.detail

    ai = await start_ai(charts_grpc_target=charts_target)
    unknown = await failure(ai.analyze(user, symbol="NOPE"))
    assert unknown.grpc_code == grpc.StatusCode.NOT_FOUND
    bad = await failure(ai.analyze(user, symbol="ACME", interval="2d"))
    assert bad.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "interval" in bad.detail
