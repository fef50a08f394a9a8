"""Which symbols exist, as charts says, cached briefly.

A subscribe names symbols; each one new to this gateway costs one ListSymbols(q=SYMBOL, limit=1)
(charts answers the exact ticker first), made with the caller's token. The answer, yes or no, is
kept `ttl_s` for every caller (existence is not per user), and concurrent checks of one symbol
share one call. A failed call (charts away, a deadline) is not cached: the caller gets charts'
error.
"""

from __future__ import annotations

import asyncio
import time

from aether.charts.v1 import charts_pb2
from aether_gateway.charts.client import ChartsClient
from aether_gateway.market.metrics import SYMBOL_LOOKUPS

# Past this many entries the cache starts over (a bound against a client naming random tickers).
MAX_ENTRIES = 10_000
LOOKUP_CONCURRENCY = 8

_HIT = SYMBOL_LOOKUPS.labels("hit")
_MISS = SYMBOL_LOOKUPS.labels("miss")


class SymbolDirectory:
    def __init__(self, charts: ChartsClient, *, ttl_s: float) -> None:
        self.charts = charts
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[bool, float]] = {}  # symbol -> (exists, expires, monotonic)
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._slots = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def unknown(self, symbols: list[str], token: str) -> list[str]:
        """The symbols charts does not know, in the order given; AetherError when charts cannot
        answer."""
        answers = await asyncio.gather(*(self.exists(s, token) for s in symbols))
        return [s for s, exists in zip(symbols, answers, strict=True) if not exists]

    async def exists(self, symbol: str, token: str) -> bool:
        known = self._known.get(symbol)
        if known is not None and known[1] > time.monotonic():
            _HIT.inc()
            return known[0]
        pending = self._inflight.get(symbol)
        if pending is not None:
            _HIT.inc()
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await self.exists(symbol, token)  # the asker left: ask again
        _MISS.inc()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[symbol] = future
        try:
            found = await self._ask(symbol, token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters (if any) get it, no "never retrieved"
            raise
        else:
            future.set_result(found)
            if len(self._known) >= MAX_ENTRIES:
                self._known.clear()
            self._known[symbol] = (found, time.monotonic() + self.ttl_s)
            return found
        finally:
            del self._inflight[symbol]

    async def _ask(self, symbol: str, token: str) -> bool:
        charts = self.charts
        async with self._slots:
            answer = await charts.call(
                charts.stub.ListSymbols,
                charts_pb2.ListSymbolsRequest(q=symbol, limit=1),
                token=token,
            )
        return bool(answer.instruments) and answer.instruments[0].symbol.upper() == symbol
