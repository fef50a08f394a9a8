"""The equity curve of a backtest as a PNG: the account's value at each bar beside buy & hold
(the same cash in the instrument at the first bar's close), the drawdown shaded below.

Drawn with matplotlib's object API on an Agg canvas, never through pyplot: no global figure
registry (pyplot's is not thread-safe) and nothing to close. A plain function of picklable
values, so the compute pool's processes can draw it. `EquityPicture.width` x `height` pixels at
100 dpi; the same values give the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class EquityPicture:
    title: str
    times: pd.DatetimeIndex
    equity: np.ndarray
    closes: np.ndarray
    cash: float
    width: int = 1200
    height: int = 700


def draw_equity(picture: EquityPicture) -> bytes:
    times = picture.times.tz_localize(None) if picture.times.tz is not None else picture.times
    equity = np.asarray(picture.equity, dtype=np.float64)
    hold = picture.cash * np.asarray(picture.closes, dtype=np.float64) / picture.closes[0]
    peak = np.maximum.accumulate(equity)
    drawdown = np.where(peak > 0, equity / peak - 1.0, 0.0) * 100

    figure = Figure(figsize=(picture.width / DPI, picture.height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    value_axes, drawdown_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    value_axes.plot(times, equity, color="#1f77b4", linewidth=1.2, label="strategy")
    value_axes.plot(times, hold, color="#7f7f7f", linewidth=0.9, label="buy & hold")
    value_axes.set_title(picture.title)
    value_axes.set_ylabel("equity")
    value_axes.grid(alpha=0.3)
    value_axes.legend(loc="upper left")
    drawdown_axes.fill_between(times, drawdown, 0.0, color="#d62728", alpha=0.4, linewidth=0)
    drawdown_axes.set_ylabel("drawdown %")
    drawdown_axes.grid(alpha=0.3)
    figure.autofmt_xdate()

    buffer = io.BytesIO()
    # No metadata that changes from one draw to the next (matplotlib writes its version only).
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
