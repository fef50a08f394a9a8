"""Bars and intervals: the records the service works with, and the checks every bar passes
(imported CSV files and the bundled datasets alike).

A bar's `time` is the start of its interval. Daily bars start at midnight of the session date in
the instrument's exchange time zone; intraday bars lie on a grid of their resolution counted from
2000-01-01 00:00 UTC (the `date_bin` origin of the candle query, repository.py).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aether_common.errors import ValidationFailed

# Interval -> (bin width for date_bin, or None; date_trunc field for calendar intervals, or None).
# Ordered finest first: an interval may be asked for at or above the stored resolution.
INTERVALS: dict[str, timedelta | str] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": "day",
    "1w": "week",
    "1M": "month",
}
_RANK = {name: rank for rank, name in enumerate(INTERVALS)}
# What bars may be stored at (coarser candles are aggregated from them).
RESOLUTIONS = ("1m", "5m", "15m", "1h", "4h", "1d")
# How far past its start a candle of each interval can reach (DST and month lengths included):
# the candle query reads bars up to `to` plus this, so the last candle is whole.
_CALENDAR_REACH = {"day": timedelta(days=2), "week": timedelta(days=8), "month": timedelta(days=32)}
REACH: dict[str, timedelta] = {
    name: width + timedelta(hours=1) if isinstance(width, timedelta) else _CALENDAR_REACH[width]
    for name, width in INTERVALS.items()
}
GRID_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
# Bars are stored for these years (UTC) only: the candle query's open window is within them.
FIRST_YEAR, LAST_YEAR = 1800, 2199

SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,31}")
CSV_COLUMNS = ("time", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Bar:
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    def as_row(self, symbol: str) -> tuple[str, datetime, float, float, float, float, float]:
        return (symbol, self.time, self.open, self.high, self.low, self.close, self.volume)


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    name: str
    timezone: str
    resolution: str
    source: str


def fail(field: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, field_errors={field: detail})


def symbol(value: str) -> str:
    upper = value.strip().upper()
    if not SYMBOL.fullmatch(upper):
        raise fail("symbol", "symbol must be 1-32 characters of A-Z 0-9 . - (e.g. AAPL, BRK.B)")
    return upper


def interval(value: str, field: str = "interval") -> str:
    if value not in INTERVALS:
        raise fail(field, f"{field} must be one of {' '.join(INTERVALS)} (got {value!r})")
    return value


def resolution(value: str) -> str:
    if value not in RESOLUTIONS:
        raise fail("resolution", f"resolution must be one of {' '.join(RESOLUTIONS)}")
    return value


def timezone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise fail("timezone", f"unknown time zone {value!r}") from exc


# The longest a calendar interval can be, as a bound on the bars one candle aggregates.
_CALENDAR_SPAN = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=31)}


def bars_per_candle(interval: str, resolution: str) -> int:
    """At most how many stored bars (at `resolution`) one candle of `interval` aggregates."""
    width, stored = INTERVALS[interval], INTERVALS[resolution]
    span = width if isinstance(width, timedelta) else _CALENDAR_SPAN[width]
    step = stored if isinstance(stored, timedelta) else _CALENDAR_SPAN[stored]
    return max(1, -(-span // step))


# Rollups (repository.py): candles of these intervals kept ready for instruments stored finer.
ROLLUPS = ("1h", "1d")


def rollups_of(resolution: str) -> list[str]:
    """The rollups an instrument stored at `resolution` keeps."""
    return [r for r in ROLLUPS if finer(resolution, r)]


def rollup_for(interval: str, resolution: str) -> str | None:
    """The rollup that candles of `interval` are aggregated from (None: the stored bars). An
    hour nests in 4 hours (both on the UTC grid), a local day in a week and a month."""
    if interval in ("1d", "1w", "1M") and finer(resolution, "1d"):
        return "1d"
    if interval in ("1h", "4h") and finer(resolution, "1h"):
        return "1h"
    return None


def intraday(interval: str) -> bool:
    return isinstance(INTERVALS[interval], timedelta)


def finer(a: str, b: str) -> bool:
    """Whether interval `a` is finer than interval `b`."""
    return _RANK[a] < _RANK[b]


def on_grid(time: datetime, resolution: str, zone: ZoneInfo) -> bool:
    """Whether `time` starts an interval of `resolution` (see the module docstring)."""
    width = INTERVALS[resolution]
    if isinstance(width, timedelta):
        return (time - GRID_ORIGIN) % width == timedelta(0)
    local = time.astimezone(zone)
    return (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)


def parse_time(text: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 (a date, or a date and time, with or without an offset) or YYYYMMDD; without an
    offset, the time is in `zone`. Raises ValueError."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def check(row: int, bar: Bar, resolution: str, zone: ZoneInfo) -> None:
    """One bar's sanity; `row` (1-based data row) names it in the refusal."""
    prices = (bar.open, bar.high, bar.low, bar.close)
    problem = ""
    if not all(math.isfinite(v) for v in (*prices, bar.volume)):
        problem = "a value is not a finite number"
    elif min(prices) <= 0:
        problem = "a price is zero or negative"
    elif bar.high < bar.low:
        problem = f"high {bar.high} is below low {bar.low}"
    elif bar.volume < 0:
        problem = f"volume {bar.volume} is negative"
    elif not FIRST_YEAR <= bar.time.astimezone(UTC).year <= LAST_YEAR:
        problem = f"time {bar.time.isoformat()} is outside the years {FIRST_YEAR}-{LAST_YEAR}"
    elif not on_grid(bar.time, resolution, zone):
        problem = f"time {bar.time.isoformat()} does not start a {resolution} bar"
    if problem:
        raise row_error(row, problem)


def row_error(row: int, problem: str) -> ValidationFailed:
    # Data rows count from 1; the file line is one more (the header is line 1).
    detail = f"row {row} (line {row + 1}): {problem}; nothing of the file was imported"
    return ValidationFailed(detail, field_errors={"csv": detail}, metadata={"row": str(row)})


def parse_csv(data: bytes | str, resolution: str, zone: ZoneInfo, *, max_rows: int) -> list[Bar]:
    """Every bar of a CSV file (header: time, open, high, low, close, volume in any order and
    case), checked; the first bad row refuses the file. Bars come back sorted by time."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise fail("csv", f"the header must name {', '.join(CSV_COLUMNS)} (missing {missing})")
    at = [header.index(c) for c in CSV_COLUMNS]
    bars: list[Bar] = []
    seen: dict[datetime, int] = {}
    for row, fields in enumerate(reader, start=1):
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if row > max_rows:
            raise fail("csv", f"at most {max_rows} rows per file")
        if len(fields) < len(header):
            raise row_error(row, f"{len(fields)} fields, the header has {len(header)}")
        t, o, h, lo, c, v = (fields[i] for i in at)
        try:
            time = parse_time(t, zone)
        except ValueError:
            raise row_error(row, f"unparseable time {t!r}") from None
        try:
            bar = Bar(time, float(o), float(h), float(lo), float(c), float(v))
        except ValueError:
            raise row_error(row, "a price or the volume is not a number") from None
        check(row, bar, resolution, zone)
        if time in seen:
            raise row_error(row, f"time {time.isoformat()} repeats row {seen[time]}")
        seen[time] = row
        bars.append(bar)
    if not bars:
        raise fail("csv", "the file has no bars")
    bars.sort(key=lambda b: b.time)
    return bars


def bucket_start(interval: str, time: datetime, zone: ZoneInfo) -> datetime:
    """The start of the `interval` candle that holds `time`, as the candle query buckets it:
    intraday on the grid from GRID_ORIGIN, days, Monday weeks and months at midnight in `zone`."""
    width = INTERVALS[interval]
    if isinstance(width, timedelta):
        return time - (time - GRID_ORIGIN) % width
    local = time.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if width == "week":
        local -= timedelta(days=local.weekday())
    elif width == "month":
        local = local.replace(day=1)
    # Midnight again after the date arithmetic, in the offset of that day (DST).
    return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(UTC)


def closing(
    resolution: str, zone: ZoneInfo, bar: datetime, following: datetime | None
) -> list[tuple[str, datetime]]:
    """The candles that the bar at `bar` (stored at `resolution`) completes, given the start of
    the bar after it (None: no bar follows, e.g. the end of a replay pass): (interval, candle
    start), finest first. The bar's own interval always closes; a coarser one closes when
    `following` falls in another candle of it."""
    closed = [(resolution, bar)]
    for interval in INTERVALS:
        if not finer(resolution, interval):
            continue
        start = bucket_start(interval, bar, zone)
        if following is None or bucket_start(interval, following, zone) != start:
            closed.append((interval, start))
    return closed


def bar_end(resolution: str, start: datetime, zone: ZoneInfo) -> datetime:
    """When the bar of `resolution` that starts at `start` ends (the next bar's start)."""
    width = INTERVALS[resolution]
    if isinstance(width, timedelta):
        return start + width
    local = start.astimezone(zone) + _CALENDAR_SPAN[width] + timedelta(hours=12)
    return bucket_start(resolution, local.astimezone(UTC), zone)
