"""An import's fast path: a CSV file of bars read and checked as columns (pandas' C reader,
numpy checks) instead of row by row; and Parquet files, read as columns (pyarrow).

It takes the files that pass every check of bars.parse_csv and gives the same bars. Any file it
does not take whole (a bad row, a time it does not read the same way, a repeated time, too many
rows) goes to bars.parse_csv, which names the first bad row: a file is accepted or refused with
the same answer either way; only a good file is faster. A Parquet file that does not pass as a
whole is written out as CSV text for the row path, so its refusal names the row too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from aether_charts.bars import (
    CSV_COLUMNS,
    FIRST_YEAR,
    GRID_ORIGIN,
    INTERVALS,
    LAST_YEAR,
    Bar,
    fail,
)

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BarColumns:
    """Checked bars as columns, sorted by time (UTC, aware datetimes for the database)."""

    times: list[datetime]
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def of(cls, bars: Sequence[Bar]) -> BarColumns:
        """Bars that the row path read and checked (sorted by time)."""
        return cls(
            [b.time for b in bars],
            *(np.array([getattr(b, f) for b in bars], dtype=np.float64) for f in CSV_COLUMNS[1:]),
        )

    def records(self, symbol: str) -> Iterator[tuple[Any, ...]]:
        """(symbol, time, open, high, low, close, volume) rows for COPY."""
        n = len(self.times)
        return zip(  # noqa: B905 (equal lengths by construction; strict costs per row)
            [symbol] * n,
            self.times,
            self.open.tolist(),
            self.high.tolist(),
            self.low.tolist(),
            self.close.tolist(),
            self.volume.tolist(),
        )


def read(data: bytes, resolution: str, zone: ZoneInfo, *, max_rows: int) -> BarColumns | None:
    """The file's bars, or None when it must go row by row (see the module docstring)."""
    first_line = data[: data.find(b"\n")] if b"\n" in data else data
    header = first_line.decode("utf-8-sig", errors="replace").split(",")
    names = {h.strip().lower(): h for h in header}
    if not set(CSV_COLUMNS) <= set(names):
        return None
    # Numbers parsed by the C reader itself; a value that is not one fails the whole read.
    dtype = {names[c]: np.float64 for c in CSV_COLUMNS[1:]} | {names["time"]: str}
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=dtype, keep_default_na=False, engine="c")
        if not 0 < len(frame) <= max_rows:
            return None
        values = {c: frame[names[c]].to_numpy(np.float64) for c in CSV_COLUMNS[1:]}
        times = _times(frame[names["time"]], zone)
    except Exception:  # anything unusual in a value or a time: the row path decides
        return None
    return _checked_columns(values, times, resolution, zone)


def read_parquet(
    data: bytes, resolution: str, zone: ZoneInfo, *, max_rows: int
) -> BarColumns | bytes:
    """A Parquet file's bars (the same columns; time as a timestamp, with or without a zone, or
    as text). When they do not pass as a whole, the file as CSV text instead, for the row path
    to refuse naming the first bad row (or to read what this does not)."""
    try:
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # not Parquet at all
        raise fail("parquet", f"not a Parquet file of bars: {exc.__class__.__name__}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise fail("parquet", f"the file must have the columns {', '.join(CSV_COLUMNS)}")
    frame = frame[list(CSV_COLUMNS)]
    if 0 < len(frame) <= max_rows:
        try:
            values = {c: frame[c].to_numpy(np.float64) for c in CSV_COLUMNS[1:]}
            time = frame["time"]
            if pd.api.types.is_datetime64_any_dtype(time):
                stamps = pd.DatetimeIndex(time)
                if stamps.tz is None:
                    stamps = stamps.tz_localize(str(zone), ambiguous="raise", nonexistent="raise")
                times: pd.DatetimeIndex | None = stamps.tz_convert("UTC").as_unit("us")
            else:
                times = _times(time.astype(str), zone)
            checked = _checked_columns(values, times, resolution, zone)
        except Exception:
            checked = None
        if checked is not None:
            return checked
    if pd.api.types.is_datetime64_any_dtype(frame["time"]):
        frame = frame.assign(time=frame["time"].map(lambda t: t.isoformat()))
    text: str = frame.to_csv(index=False)
    return text.encode()


def _checked_columns(
    values: dict[str, Floats], times: pd.DatetimeIndex | None, resolution: str, zone: ZoneInfo
) -> BarColumns | None:
    """The bars sorted by time, if every one passes bars.check and no time repeats."""
    if times is None or bool(times.isna().any()):
        return None
    if not _checked(values, times, resolution, zone):
        return None
    order = np.argsort(times.asi8, kind="stable")
    sorted_times = times[order]
    if bool((np.diff(sorted_times.asi8) == 0).any()):
        return None  # a repeated time: the row path names both rows
    return BarColumns(
        list(sorted_times.to_pydatetime()),
        *(values[c][order] for c in CSV_COLUMNS[1:]),
    )


def _times(text: pd.Series, zone: ZoneInfo) -> pd.DatetimeIndex | None:
    """ISO 8601 times, all with an offset or all without (then in `zone`), as UTC; None for
    anything else (the row path reads what this does not)."""
    stripped = text.str.strip()
    has_offset = stripped.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True)
    if bool(has_offset.all()):
        parsed = pd.to_datetime(stripped, format="ISO8601", utc=True)
    elif not bool(has_offset.any()):
        naive = pd.to_datetime(stripped, format="ISO8601")
        # As the row path does (`replace(tzinfo=zone)`): a time DST skips or repeats is left
        # to it.
        parsed = naive.dt.tz_localize(str(zone), ambiguous="raise", nonexistent="raise")
        parsed = parsed.dt.tz_convert("UTC")
    else:
        return None
    index = pd.DatetimeIndex(parsed)
    return None if bool(index.isna().any()) else index.as_unit("us")


def _checked(
    values: dict[str, Floats], times: pd.DatetimeIndex, resolution: str, zone: ZoneInfo
) -> bool:
    """bars.check for every row at once."""
    o, h, lo, c, v = (values[k] for k in CSV_COLUMNS[1:])
    prices = np.stack([o, h, lo, c])
    if not (np.isfinite(prices).all() and np.isfinite(v).all()):
        return False
    if (prices <= 0).any() or (h < lo).any() or (v < 0).any():
        return False
    years = times.year
    if (years < FIRST_YEAR).any() or (years > LAST_YEAR).any():
        return False
    width = INTERVALS[resolution]
    if isinstance(width, str):  # days: midnight in the exchange's zone
        local = times.tz_convert(str(zone))
        return bool((local == local.normalize()).all())
    step = int(width.total_seconds() * 1_000_000)
    origin = int(pd.Timestamp(GRID_ORIGIN).as_unit("us").value)
    return bool(((times.asi8 - origin) % step == 0).all())
