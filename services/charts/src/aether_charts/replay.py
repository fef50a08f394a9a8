"""The replayer: the stored history of a few symbols played back as a live market.

Every `bar_seconds` each replayed symbol plays its next stored bar as four ticks, a quarter of
`bar_seconds` apart: open -> the extreme nearer the open -> the other extreme -> close (marked
`derived`, each with a quarter of the bar's volume), then `bar_closed` for every interval the
bar completes (closes.py). Market time is the history's: a tick's time is its bar's start plus
0, 1/4, 2/4 or 3/4 of the bar.

When a symbol's data runs out its next pass starts again from its first bar (`Replay.pass`
+1: market time goes back, and identities differ from the previous pass). A symbol with no
bars yet (the bundled history still loading) is skipped until it has some.

Exactly once, across restarts and replicas: one replica plays (a PostgreSQL session advisory
lock, held on a dedicated connection; the others wait for it). Each step writes its events to
the outbox and each symbol's position (`replay_positions`: pass, bar, last tick) in one
transaction, so a replayer killed at any point resumes after the last step that committed.
Event ids are derived from the identities (market_events.py): a step written twice would still
be one event to every consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from aether_charts import market_events, repository
from aether_charts.bars import Bar, Instrument, bar_end
from aether_charts.closes import closed_candles
from aether_charts.metrics import REPLAYED
from aether_common.events import Event
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase, UnitOfWork

log = get_logger(__name__)

REPLAY_LOCK = zlib.crc32(b"aether.charts.replay")
TICKS_PER_BAR = 4
# Bars read ahead per symbol.
BUFFER = 256
# How often a replica that does not play tries to take over.
STANDBY_RETRY_S = 5.0


def derived_prices(bar: Bar) -> tuple[float, float, float, float]:
    """open -> the extreme nearer the open -> the other extreme -> close."""
    if bar.high - bar.open <= bar.open - bar.low:
        return bar.open, bar.high, bar.low, bar.close
    return bar.open, bar.low, bar.high, bar.close


@dataclass
class _Symbol:
    """One replayed symbol: where it is (the last tick played) and the bars read ahead."""

    instrument: Instrument
    pass_: int = 1
    bar: Bar | None = None
    tick: int = TICKS_PER_BAR - 1  # the last tick played of `bar`
    ahead: deque[Bar] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class _Played:
    """What one step plays for a symbol, applied to it once the step committed."""

    symbol: _Symbol
    pass_: int
    bar: Bar
    tick: int
    ahead: deque[Bar]


class Replayer:
    """Component: plays `symbols` while this replica holds the replay lock."""

    name = "market-replay"

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        symbols: Sequence[str],
        bar_seconds: float,
        topic_prefix: str = "",
    ) -> None:
        self._database = database
        self._wanted = list(symbols)
        self.bar_seconds = bar_seconds
        self._prefix = topic_prefix
        self._symbols: dict[str, _Symbol] = {}
        self._task: asyncio.Task[None] | None = None
        self.playing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="market-replay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> bool:
        """Alive (playing, or waiting for the replica that plays)."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: try again, as a standby
                log.warning("replay interrupted", error=repr(exc))
            self.playing = False
            await asyncio.sleep(STANDBY_RETRY_S)

    async def _lead(self) -> None:
        """Wait for the replay lock, then play until cancelled or the connection is lost."""
        conn = await asyncpg.connect(self._database.dsn)
        try:
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", REPLAY_LOCK):
                    break
                await asyncio.sleep(STANDBY_RETRY_S)
            self._symbols = {}
            self.playing = True
            log.info("replay playing", symbols=self._wanted, bar_seconds=self.bar_seconds)
            step_s = self.bar_seconds / TICKS_PER_BAR
            due = time.monotonic()
            while True:
                await self.step()
                # The lock lives with this session: a lost connection ends the replay here.
                await conn.fetchval("SELECT 1")
                due = max(due + step_s, time.monotonic())
                await asyncio.sleep(due - time.monotonic())
        finally:
            await conn.close(timeout=2)

    async def step(self) -> int:
        """Play one tick of every symbol (and the bars that close with it) in one transaction;
        the number of events written."""
        return await self._database.transaction(self._step)

    async def _step(self, uow: UnitOfWork) -> int:
        conn = uow.conn
        await self._discover(conn)
        events: list[Event[Any]] = []
        played: list[_Played] = []
        for symbol in self._symbols.values():
            step = await self._next(conn, symbol)
            if step is None:
                continue
            played.append(step)
            events.extend(await self._events(conn, step))
        if not played:
            return 0
        await uow.emit(*events)
        await conn.executemany(
            """
            INSERT INTO replay_positions (symbol, pass, bar_time, tick) VALUES ($1, $2, $3, $4)
            ON CONFLICT (symbol) DO UPDATE SET pass = excluded.pass,
                bar_time = excluded.bar_time, tick = excluded.tick, updated_at = now()
            """,
            [(p.symbol.instrument.symbol, p.pass_, p.bar.time, p.tick) for p in played],
        )

        async def applied() -> None:
            for p in played:
                p.symbol.pass_, p.symbol.bar, p.symbol.tick = p.pass_, p.bar, p.tick
                p.symbol.ahead = p.ahead
            REPLAYED.inc(len(events))

        uow.after_commit(applied)
        return len(events)

    async def _discover(self, conn: Any) -> None:
        """Take up the wanted symbols that exist now, where their last committed step left them."""
        missing = [s for s in self._wanted if s not in self._symbols]
        for name in missing:
            instrument = await repository.instrument(conn, name)
            if instrument is None or await repository.last_bar_time(conn, name) is None:
                continue
            symbol = _Symbol(instrument)
            row = await conn.fetchrow(
                "SELECT pass, bar_time, tick FROM replay_positions WHERE symbol = $1", name
            )
            if row is not None:
                bar = await repository.bar_at(conn, name, row["bar_time"])
                if bar is not None:  # else the bar is gone (re-imported): start afresh
                    symbol.pass_, symbol.bar, symbol.tick = row["pass"], bar, row["tick"]
            self._symbols[name] = symbol

    async def _next(self, conn: Any, symbol: _Symbol) -> _Played | None:
        """The symbol's next tick: the same bar's next one, or the first of the next bar (of
        the next pass when the history ran out). None: the symbol has no bars at all."""
        ahead = deque(symbol.ahead)
        if symbol.bar is not None and symbol.tick < TICKS_PER_BAR - 1:
            return _Played(symbol, symbol.pass_, symbol.bar, symbol.tick + 1, ahead)
        pass_ = symbol.pass_
        if not ahead:
            ahead = await self._read_after(conn, symbol, symbol.bar)
        if not ahead:  # the history ran out: the next pass starts at the first bar
            pass_ = symbol.pass_ + 1 if symbol.bar is not None else symbol.pass_
            ahead = await self._read_after(conn, symbol, None)
            if not ahead:
                return None
        bar = ahead.popleft()
        return _Played(symbol, pass_, bar, 0, ahead)

    async def _read_after(self, conn: Any, symbol: _Symbol, bar: Bar | None) -> deque[Bar]:
        after = None if bar is None else bar.time
        bars = await repository.bars_after(conn, symbol.instrument.symbol, after, BUFFER)
        return deque(bars)

    async def _events(self, conn: Any, p: _Played) -> list[Event[Any]]:
        instrument = p.symbol.instrument
        name = instrument.symbol
        zone = ZoneInfo(instrument.timezone)
        start = p.bar.time
        tick_time = start + (bar_end(instrument.resolution, start, zone) - start) * (
            p.tick / TICKS_PER_BAR
        )
        common: dict[str, Any] = {
            "replay_pass": p.pass_,
            "bar_seconds": self.bar_seconds,
            "topic_prefix": self._prefix,
        }
        events: list[Event[Any]] = [
            market_events.tick(
                name,
                market_events.tick_id(name, tick_time, p.tick, replay_pass=p.pass_),
                tick_time,
                derived_prices(p.bar)[p.tick],
                p.bar.volume / TICKS_PER_BAR,
                derived=True,
                **common,
            )
        ]
        if p.tick == TICKS_PER_BAR - 1:
            ahead = p.ahead
            if not ahead:  # is there a bar after this one? (a pass ends without one)
                ahead.extend(await self._read_after(conn, p.symbol, p.bar))
            following = ahead[0].time if ahead else None
            for interval, candle in await closed_candles(conn, instrument, start, following):
                events.append(market_events.bar_closed(name, interval, candle, **common))
        return events
