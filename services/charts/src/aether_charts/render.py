"""Chart images: candles, volume and indicators drawn with mplfinance (matplotlib's Agg
backend, headless) to PNG, and the content key an image is stored under. Overlay indicators
(sma, ema, bbands, vwap ...) are drawn on the price; each panel indicator (rsi, macd ...) gets
a panel of its own below the volume.

Drawing is CPU-bound and mostly Python code holding the GIL, and pyplot keeps a global registry
of figures that is not thread-safe. So `Renderer` (a component) draws in a pool of worker
processes (spawned, never forked: the parent runs gRPC's threads): the event loop only waits,
each worker has its own matplotlib, and every figure is closed after saving. `draw` is the
function the workers run; it only takes picklable plain values.

The key is a SHA-256 over everything that changes the picture: symbol, interval, the window
actually drawn (first and last candle time, count), every OHLCV value, each overlay with its
parameters and its computed values (they depend on warm-up history before the window), the size
and the style. The same request over the same data gives the same key; any new or replaced bar
in the window or its warm-up gives a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from aether_charts.metrics import RENDER_DURATION

# The styles offered (each is one of mplfinance's `available_styles()`; a test checks it).
STYLES = ("yahoo", "charles", "binance", "classic", "mike", "nightclouds", "default")
DEFAULT_STYLE = "yahoo"
DPI = 100
# Line colours, in the order of the request's indicators and outputs (matplotlib's tab10).
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
KEY_PREFIX = "charts/v1"


@dataclass(frozen=True, slots=True)
class Overlay:
    """One indicator line: its label ("sma:20 sma"), one value per candle (NaN: undefined) and
    where it is drawn: 0 on the price, n > 0 in the n-th indicator panel below the volume."""

    label: str
    values: np.ndarray
    panel: int = 0


@dataclass(frozen=True, slots=True)
class Picture:
    """Everything drawn: the candles as arrays (times in UTC), the overlays, size and style."""

    symbol: str
    interval: str
    times: Sequence[datetime]
    ohlcv: np.ndarray  # shape (n, 5): open, high, low, close, volume
    overlays: Sequence[Overlay]
    width: int
    height: int
    style: str

    def key(self) -> str:
        """The content key: `charts/v1/<SYMBOL>/<interval>/<sha256>.png`."""
        digest = hashlib.sha256()
        header = {
            "symbol": self.symbol,
            "interval": self.interval,
            "first": self.times[0].isoformat(),
            "last": self.times[-1].isoformat(),
            "count": len(self.times),
            "overlays": [[o.label, o.panel] for o in self.overlays],
            "size": [self.width, self.height],
            "style": self.style,
        }
        digest.update(json.dumps(header, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.ohlcv, dtype=np.float64).tobytes())
        for t in self.times:
            digest.update(t.isoformat().encode())
        for overlay in self.overlays:
            digest.update(np.ascontiguousarray(overlay.values, dtype=np.float64).tobytes())
        return f"{KEY_PREFIX}/{self.symbol}/{self.interval}/{digest.hexdigest()}.png"


def draw(picture: Picture) -> bytes:
    """The PNG of `picture`, exactly width x height pixels (run in a worker process)."""
    import matplotlib

    matplotlib.use("Agg")
    # Styles ask for a "semibold" title the bundled DejaVu Sans lacks: matplotlib picks bold and
    # says so on every image.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import mplfinance as mpf
    import pandas as pd
    from matplotlib import pyplot as plt

    index = pd.DatetimeIndex([t.replace(tzinfo=None) for t in picture.times])
    frame = pd.DataFrame(
        picture.ohlcv, index=index, columns=["Open", "High", "Low", "Close", "Volume"]
    )
    has_volume = bool((frame["Volume"] > 0).any())
    # mplfinance numbers panels 0 (price), 1 (volume) ... without gaps: a panel whose lines are
    # all undefined (history too short) is left out and the next ones move up.
    drawn = [o for o in picture.overlays if not np.isnan(o.values).all()]
    first_free = 2 if has_volume else 1
    panels = {n: first_free + i for i, n in enumerate(sorted({o.panel for o in drawn} - {0}))}
    lines = [
        mpf.make_addplot(
            pd.Series(o.values, index=index),
            label=o.label,
            width=1.0,
            color=PALETTE[n % len(PALETTE)],
            panel=panels.get(o.panel, 0),
            secondary_y=False,
            **({"ylabel": o.label.split(" ")[0]} if o.panel else {}),
        )
        for n, o in enumerate(drawn)
    ]
    extra: dict[str, Any] = {"addplot": lines} if lines else {}
    fig, _ = mpf.plot(
        frame,
        type="candle",
        volume=has_volume,
        style=picture.style,
        **extra,
        title=f"{picture.symbol} {picture.interval}",
        figsize=(picture.width / DPI, picture.height / DPI),
        returnfig=True,
        warn_too_much_data=len(frame) + 1,
    )
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()
    finally:
        plt.close(fig)


class Renderer:
    """Component: a pool of `workers` spawned processes that run `draw`. `drawn` counts the
    images drawn by this replica (tests and metrics read it)."""

    name = "renderer"

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.drawn = 0

    async def start(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=self._workers, mp_context=multiprocessing.get_context("spawn")
        )

    async def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def ready(self) -> bool:
        return self._pool is not None

    async def render(self, picture: Picture) -> bytes:
        if self._pool is None:
            raise RuntimeError("the renderer is not started")
        with RENDER_DURATION.time():
            png = await asyncio.get_running_loop().run_in_executor(self._pool, draw, picture)
        self.drawn += 1
        return png
