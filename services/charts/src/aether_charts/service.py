"""The charts service's rules: who may call what, the candle window and its cursor, imports,
chart images (what is drawn, read here; drawing in render.py; stored in S3 under its content key).

Methods take a connection (or a unit of work) plus plain arguments and return plain records;
they never commit. `import_file` is the one exception: an import is two transactions (the
missing yearly partitions first, short, then the bars: repository.py says why), so the
orchestration that the gRPC servicer and `python -m aether_charts.importer` share lives here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np

from aether_charts import bars as b
from aether_charts import columns, repository
from aether_charts import indicators as ind
from aether_charts.archive_reader import ArchiveReader
from aether_charts.bars import Instrument
from aether_charts.callers import Caller, require_caller
from aether_charts.columns import BarColumns
from aether_charts.config import ChartsSettings
from aether_charts.metrics import CHART_IMAGES
from aether_charts.render import DEFAULT_STYLE, STYLES, Overlay, Picture, Renderer
from aether_charts.repository import Candle, Conn, InstrumentSummary, Session
from aether_common.errors import Conflict, Forbidden, NotFound
from aether_common.postgres import PostgresDatabase, UnitOfWork
from aether_common.s3 import S3Bucket

MAX_OVERLAYS = 5
MAX_PANELS = 3

# An unset `from` / `to`: before and after any bar (bars.FIRST_YEAR, bars.LAST_YEAR).
EARLIEST = datetime(b.FIRST_YEAR, 1, 1, tzinfo=UTC)
LATEST = datetime(b.LAST_YEAR + 1, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
IMPORT_SOURCE = "import"


@dataclass(frozen=True, slots=True)
class CandleQuery:
    symbol: str
    interval: str  # "" means the stored resolution
    start: datetime | None
    end: datetime | None
    limit: int  # 0 means the default
    cursor: str
    latest: bool = False  # the last `limit` candles before `end`, not the first from `start`


@dataclass(frozen=True, slots=True)
class CandlePage:
    instrument: Instrument
    interval: str
    candles: list[Candle]
    next_cursor: str


@dataclass(frozen=True, slots=True)
class IndicatorPage:
    """Indicator outputs aligned to a page of candles: (indicator key, output, values)."""

    candles: CandlePage
    series: list[tuple[str, str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class ChartRequest:
    """What RenderChart draws: a window of candles (no cursor), overlays, size and style
    (0 / "" mean the defaults)."""

    query: CandleQuery
    overlays: str
    width: int
    height: int
    style: str


@dataclass(frozen=True, slots=True)
class ChartImage:
    key: str
    url: str
    expires_at: datetime
    cached: bool


@dataclass(frozen=True, slots=True)
class Imported:
    rows: int
    written: int


class ChartsService:
    def __init__(self, settings: ChartsSettings, archive: ArchiveReader) -> None:
        self._s = settings
        # Candles and warm-up counts: over `bars`, and the archive when a window reaches it.
        self._archive = archive

    # -- callers -----------------------------------------------------------------------------------
    def caller(self) -> Caller:
        return require_caller(
            admin_role=self._s.admin_role, admin_permission=self._s.admin_permission
        )

    def admin(self) -> Caller:
        caller = self.caller()
        if not caller.admin:
            raise Forbidden(
                f"importing bars needs the {self._s.admin_role!r} role"
                f" or the {self._s.admin_permission!r} permission"
            )
        return caller

    # -- reads -------------------------------------------------------------------------------------
    async def candles(self, conn: Conn, query: CandleQuery) -> CandlePage:
        symbol = b.symbol(query.symbol)
        limit = self._limit(query.limit)
        start, end = query.start or EARLIEST, query.end or LATEST
        if start > end:
            raise b.fail("from", "from is after to")
        instrument = await self._instrument(conn, symbol)
        interval = b.interval(query.interval) if query.interval else instrument.resolution
        if b.finer(interval, instrument.resolution):
            allowed = " ".join(i for i in b.INTERVALS if not b.finer(i, instrument.resolution))
            raise b.fail(
                "interval",
                f"interval {interval!r} is finer than {symbol}'s stored"
                f" {instrument.resolution} bars: ask for one of {allowed}",
            )
        # No bar lies outside [EARLIEST, LATEST): clamping changes no answer (and keeps
        # `end + reach` within datetime's range).
        start, end = max(start, EARLIEST), min(end, LATEST)
        if query.latest:
            return await self._latest(conn, instrument, interval, start, end, limit, query.cursor)
        if query.cursor:
            after = decode_cursor(query.cursor, symbol, interval)
            start = max(start, after + ONE_MICROSECOND)
        rows = await self._archive.candles(
            conn,
            symbol,
            interval,
            instrument.timezone,
            start=start,
            end=end,
            reach=b.REACH[interval],
            limit=limit + 1,
            rollup=b.rollup_for(interval, instrument.resolution),
        )
        more = len(rows) > limit
        page = rows[:limit]
        cursor = encode_cursor(symbol, interval, page[-1].time) if more else ""
        return CandlePage(instrument, interval, page, cursor)

    async def _latest(
        self,
        conn: Conn,
        instrument: Instrument,
        interval: str,
        start: datetime,
        end: datetime,
        limit: int,
        cursor: str,
    ) -> CandlePage:
        """The last `limit` candles starting in [start, end): the bars they can hold at most
        (bars_per_candle) are read back from `end`, then the whole candles among them cut."""
        if cursor:
            raise b.fail("cursor", "latest pages back with `to`, not a cursor")
        rollup = b.rollup_for(interval, instrument.resolution)
        reach = limit * b.bars_per_candle(interval, rollup or instrument.resolution)
        first = await self._archive.time_before(conn, instrument.symbol, end, reach, rollup=rollup)
        rows = await self._archive.candles(
            conn,
            instrument.symbol,
            interval,
            instrument.timezone,
            start=max(start, first or start),
            end=end,
            reach=b.REACH[interval],
            limit=reach + 1,
            rollup=rollup,
        )
        return CandlePage(instrument, interval, rows[-limit:], "")

    async def indicators(self, conn: Conn, query: CandleQuery, wanted: str) -> IndicatorPage:
        """The indicators over the page of candles `candles(query)` answers, each computed with
        its warm-up history before the page (indicators.py says how much)."""
        try:
            parsed = ind.parse(wanted)
        except ValueError as exc:
            raise b.fail("indicators", str(exc)) from None
        page = await self.candles(conn, query)
        history = await self._warmup(conn, page, parsed) if page.candles else []
        bars = _as_arrays([*history, *page.candles], page, sessions=_wants_vwap(parsed))
        series = [
            (indicator.key, output, values)
            for indicator in parsed
            for output, values in ind.compute(indicator, bars, len(history)).items()
        ]
        return IndicatorPage(page, series)

    async def _warmup(
        self, conn: Conn, page: CandlePage, parsed: list[ind.Indicator]
    ) -> list[Candle]:
        """Whole candles before the page: warmup_bars of them, and for VWAP on intraday
        candles at least back to the start of the first candle's session."""
        first = page.candles[0].time
        instrument, interval = page.instrument, page.interval
        count = ind.warmup_bars(parsed)
        start = first
        rollup = b.rollup_for(interval, instrument.resolution)
        if count:
            stored = count * b.bars_per_candle(interval, rollup or instrument.resolution)
            start = (
                await self._archive.time_before(
                    conn, instrument.symbol, first, stored, rollup=rollup
                )
                or first
            )
        if _wants_vwap(parsed) and b.intraday(interval):
            start = min(start, _session_start(first, instrument.timezone))
        if start >= first:
            return []
        return await self._archive.candles(
            conn,
            instrument.symbol,
            interval,
            instrument.timezone,
            start=start,
            end=first,
            reach=b.REACH[interval],
            limit=1_000_000,
            rollup=rollup,
        )

    async def quote(self, conn: Conn, symbol: str) -> tuple[Instrument, Session]:
        """The symbol's last session (the trading day of its last bar) and the close before."""
        instrument = await self._instrument(conn, b.symbol(symbol))
        last = await repository.last_bar_time(conn, instrument.symbol)
        if last is None:
            raise NotFound(
                f"{instrument.symbol} has no bars yet", field_errors={"symbol": "no bars"}
            )
        start = _session_start(last, instrument.timezone)
        return instrument, await repository.session(conn, instrument.symbol, start)

    # -- chart images ------------------------------------------------------------------------------
    async def picture(self, conn: Conn, request: ChartRequest) -> Picture:
        """What a chart of `request` draws: its size, style and overlays checked first, then
        the candles (and the overlays' values, warmed up as GetIndicators does) read."""
        s = self._s
        width = request.width or s.render_default_width
        height = request.height or s.render_default_height
        for name, side in (("width", width), ("height", height)):
            if not s.render_min_side <= side <= s.render_max_side:
                raise b.fail(
                    name,
                    f"{name} must be {s.render_min_side}-{s.render_max_side} pixels (0: default)",
                )
        style = request.style.strip().lower() or DEFAULT_STYLE
        if style not in STYLES:
            raise b.fail("style", f"style must be one of {', '.join(STYLES)}")
        limit = request.query.limit
        if limit < 0 or limit > s.render_max_limit:
            raise b.fail(
                "limit",
                f"a chart draws 1-{s.render_max_limit} candles (0: {s.render_default_limit})",
            )
        overlays = _overlays(request.overlays)
        query = replace(request.query, limit=limit or s.render_default_limit, cursor="")
        if overlays:
            keys = ",".join(indicator.key for indicator in overlays)
            drawn = await self.indicators(conn, query, keys)
            page = drawn.candles
            panel_of = _panels(overlays)
            lines = [
                Overlay(f"{key} {output}", values, panel_of[key])
                for key, output, values in drawn.series
            ]
        else:
            page, lines = await self.candles(conn, query), []
        if not page.candles:
            raise b.fail(
                "from", f"{page.instrument.symbol} has no {page.interval} candles in this window"
            )
        ohlcv = np.array(
            [(c.open, c.high, c.low, c.close, c.volume) for c in page.candles], dtype=np.float64
        )
        return Picture(
            symbol=page.instrument.symbol,
            interval=page.interval,
            times=[c.time for c in page.candles],
            ohlcv=ohlcv,
            overlays=lines,
            width=width,
            height=height,
            style=style,
        )

    async def chart_image(
        self, bucket: S3Bucket, renderer: Renderer, picture: Picture
    ) -> ChartImage:
        """The stored image of `picture` (drawn and stored only when its key is not there yet)
        and a presigned URL to it."""
        key = picture.key()
        cached = await bucket.exists(key)
        if not cached:
            png = await renderer.render(picture)
            await bucket.put(key, png, content_type="image/png")
        CHART_IMAGES.labels("cached" if cached else "drawn").inc()
        expiry = self._s.render_url_expiry_s
        expires_at = datetime.now(UTC) + timedelta(seconds=expiry)
        url = await bucket.presigned_get(key, expires_s=expiry)
        return ChartImage(key, url, expires_at, cached)

    async def search(self, conn: Conn, q: str, limit: int) -> list[InstrumentSummary]:
        if len(q) > 100:
            raise b.fail("q", "q: at most 100 characters")
        if limit < 0 or limit > 1000:
            raise b.fail("limit", "limit must be 0-1000")
        return await repository.search_instruments(conn, q, limit or 50)

    async def _instrument(self, conn: Conn, symbol: str) -> Instrument:
        found = await repository.instrument(conn, symbol)
        if found is None:
            raise NotFound(f"unknown symbol {symbol!r}", field_errors={"symbol": "unknown"})
        return found

    def _limit(self, limit: int) -> int:
        if limit < 0 or limit > self._s.max_limit:
            raise b.fail(
                "limit", f"limit must be 0-{self._s.max_limit} (0: {self._s.default_limit})"
            )
        return limit or self._s.default_limit

    # -- imports -----------------------------------------------------------------------------------
    async def import_file(
        self,
        database: PostgresDatabase,
        symbol: str,
        data: bytes,
        *,
        name: str = "",
        timezone: str = "",
        resolution: str = "",
        file_format: str = "csv",
    ) -> Imported:
        return await import_file(
            database,
            symbol,
            data,
            name=name,
            timezone=timezone,
            resolution=resolution,
            file_format=file_format,
            max_rows=self._s.max_import_rows,
        )


async def import_file(
    database: PostgresDatabase,
    symbol: str,
    data: bytes,
    *,
    name: str = "",
    timezone: str = "",
    resolution: str = "",
    max_rows: int,
    file_format: str = "csv",
) -> Imported:
    """Import a CSV (or, `file_format="parquet"`, Parquet) file of bars for one symbol, all or
    nothing (see the module docstring). A new symbol is created with `name`, `timezone` (UTC)
    and `resolution` (1d)."""
    symbol = b.symbol(symbol)
    async with database.connection() as conn:
        known = await repository.instrument(conn, symbol)
    instrument = known or Instrument(
        symbol,
        name.strip()[:200],
        timezone or "UTC",
        b.resolution(resolution or "1d"),
        IMPORT_SOURCE,
    )
    bars = await asyncio.to_thread(
        _read, data, instrument.resolution, instrument.timezone, max_rows, file_format
    )
    first, last = bars.times[0], bars.times[-1]
    years = set(range(first.year, last.year + 1))
    await database.transaction(lambda uow: repository.ensure_partitions(uow.conn, years))
    written = await database.transaction(lambda uow: store(uow, instrument, bars))
    return Imported(len(bars), written)


def _read(
    data: bytes, resolution: str, timezone: str, max_rows: int, file_format: str
) -> BarColumns:
    """The file's checked bars: as columns when it takes the fast path, else row by row
    (which refuses a bad file naming its first bad row). columns.py says why both."""
    zone = b.timezone(timezone)
    if file_format == "parquet":
        read = columns.read_parquet(data, resolution, zone, max_rows=max_rows)
        if isinstance(read, BarColumns):
            return read
        data = read  # as CSV text, for the row path
    else:
        fast = columns.read(data, resolution, zone, max_rows=max_rows)
        if fast is not None:
            return fast
    return BarColumns.of(b.parse_csv(data, resolution, zone, max_rows=max_rows))


async def store(uow: UnitOfWork, instrument: Instrument, bars: BarColumns) -> int:
    """Write checked bars of one instrument (created when missing), replacing stored bars at
    the same times, and its rollups. Conflict if the instrument changed since the bars were
    checked. Imports of one symbol take turns (its row is locked); a range that holds none of
    its bars yet is COPied straight into `bars`."""
    conn, symbol = uow.conn, instrument.symbol
    await repository.add_instruments(conn, [instrument])
    stored = await repository.lock_instrument(conn, symbol)
    if stored is None or (stored.timezone, stored.resolution) != (
        instrument.timezone,
        instrument.resolution,
    ):
        raise Conflict(f"{symbol} changed during the import: try again")
    first, last = bars.times[0], bars.times[-1]
    if await repository.holds_bars(conn, symbol, first, last):
        written = await repository.write_bars(conn, list(bars.records(symbol)), replace=True)
    else:
        try:
            await repository.copy_bars(conn, symbol, bars.records(symbol))
        except asyncpg.UniqueViolationError:  # a feed wrote a bar there meanwhile
            raise Conflict(f"bars of {symbol} were written during the import: try again") from None
        written = len(bars)
    await repository.refresh_rollups(conn, [symbol], first, last)
    await repository.bump_versions(conn, [symbol])
    return written


def _overlays(text: str) -> list[ind.Indicator]:
    """The indicators of a chart: at most MAX_OVERLAYS, of which at most MAX_PANELS are panel
    indicators (each drawn in a panel of its own)."""
    if not text.strip():
        return []
    try:
        parsed = ind.parse(text)
    except ValueError as exc:
        raise b.fail("overlays", str(exc)) from None
    if len(parsed) > MAX_OVERLAYS:
        raise b.fail("overlays", f"at most {MAX_OVERLAYS} indicators per chart")
    panels = [i.key for i in parsed if i.definition.placement != "overlay"]
    if len(panels) > MAX_PANELS:
        raise b.fail(
            "overlays",
            f"{', '.join(panels)}: at most {MAX_PANELS} panel indicators per chart"
            " (each takes a panel below the price)",
        )
    return parsed


def _panels(parsed: list[ind.Indicator]) -> dict[str, int]:
    """Where each indicator is drawn: 0 on the price, 1.. the panels below, in request order."""
    out: dict[str, int] = {}
    for indicator in parsed:
        below = indicator.definition.placement != "overlay"
        out[indicator.key] = len({p for p in out.values() if p}) + 1 if below else 0
    return out


def _wants_vwap(parsed: list[ind.Indicator]) -> bool:
    return any(indicator.definition.name == "vwap" for indicator in parsed)


def _session_start(time: datetime, timezone: str) -> datetime:
    """Midnight of the trading day `time` is in, in the exchange's time zone."""
    local = time.astimezone(ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _as_arrays(candles: list[Candle], page: CandlePage, *, sessions: bool) -> ind.Bars:
    """Candles as indicator input; `sessions`: each candle's trading day (VWAP's anchor): its
    local date for intraday candles, the candle itself for daily and coarser ones."""
    columns = np.array(
        [(c.open, c.high, c.low, c.close, c.volume) for c in candles], dtype=np.float64
    ).reshape(-1, 5)
    if not sessions:
        session = np.zeros(len(candles), dtype=np.int64)
    elif b.intraday(page.interval):
        zone = ZoneInfo(page.instrument.timezone)
        session = np.array([c.time.astimezone(zone).toordinal() for c in candles])
    else:
        session = np.arange(len(candles))
    open_, high, low, close, volume = (np.ascontiguousarray(columns[:, n]) for n in range(5))
    return ind.Bars(open_, high, low, close, volume, session)


# -- the cursor: the last candle's start, bound to its symbol and interval -------------------------
def encode_cursor(symbol: str, interval: str, last: datetime) -> str:
    micros = (last - EARLIEST) // ONE_MICROSECOND
    raw = f"{symbol}|{interval}|{micros}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, symbol: str, interval: str) -> datetime:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        c_symbol, c_interval, micros = raw.split("|")
        last = EARLIEST + int(micros) * ONE_MICROSECOND
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise b.fail("cursor", "cursor is not one this service returned") from None
    if (c_symbol, c_interval) != (symbol, interval):
        raise b.fail("cursor", "cursor belongs to another symbol or interval")
    return last
