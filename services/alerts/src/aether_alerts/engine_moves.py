"""Percent moves: which `percent_move` rules a price fires, on market time.

A rule (`value` percent, `params.window_s`) fires when the price is at least `value` percent
away (either way) from the price `window_s` before it: the last price seen at or before that
moment. Until a symbol's history reaches that far back, its rules of that window wait.

Per symbol the recent prices are kept as long as its longest window, thinned to a point every
`window / POINTS` seconds (at least one second), so a symbol costs a few thousand points
whatever the tick rate; the reference price is then at most that spacing older than exact.
Rules are grouped by (symbol, window) and sorted by percent: a tick costs one reference lookup
(a binary search in the history) and one binary search per distinct window of its symbol.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

POINTS = 2048


@dataclass
class _Window:
    percents: list[float] = field(default_factory=list)  # sorted
    rules: list[str] = field(default_factory=list)  # in the same order


@dataclass
class _Symbol:
    windows: dict[float, _Window] = field(default_factory=dict)
    times: deque[float] = field(default_factory=deque)  # epoch seconds, increasing
    prices: deque[float] = field(default_factory=deque)

    def longest(self) -> float:
        return max(self.windows, default=0.0)


class MoveWatch:
    def __init__(self) -> None:
        self._symbols: dict[str, _Symbol] = {}
        self._rules: dict[str, tuple[str, float, float]] = {}  # id -> (symbol, window, percent)

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule_id: str, symbol: str, percent: float, window_s: float) -> None:
        self.remove(rule_id)
        self._rules[rule_id] = (symbol, window_s, percent)
        book = self._symbols.setdefault(symbol, _Symbol())
        window = book.windows.setdefault(window_s, _Window())
        at = bisect.bisect_right(window.percents, percent)
        window.percents.insert(at, percent)
        window.rules.insert(at, rule_id)

    def remove(self, rule_id: str) -> None:
        found = self._rules.pop(rule_id, None)
        if found is None:
            return
        symbol, window_s, _ = found
        book = self._symbols[symbol]
        window = book.windows[window_s]
        at = window.rules.index(rule_id)
        del window.rules[at], window.percents[at]
        if not window.rules:
            del book.windows[window_s]

    def reset(self, symbol: str) -> None:
        """Forget the symbol's prices (market time went back: a replay's new pass)."""
        book = self._symbols.get(symbol)
        if book is not None:
            book.times.clear()
            book.prices.clear()

    def move(self, symbol: str, time: datetime, price: float) -> list[str]:
        """The symbol traded at `price` at market time `time`: the rules that fire."""
        book = self._symbols.get(symbol)
        if book is None or not book.windows:
            return []
        now = time.timestamp()
        fired: list[str] = []
        if book.times and now < book.times[-1]:
            return fired  # out of order: neither a reference nor a move
        for window_s, window in book.windows.items():
            reference = _price_at(book, now - window_s)
            if reference is None or reference <= 0:
                continue
            moved = abs(price / reference - 1.0) * 100.0
            fired += window.rules[: bisect.bisect_right(window.percents, moved)]
        _remember(book, now, price)
        return fired


def _price_at(book: _Symbol, moment: float) -> float | None:
    """The last price at or before `moment`; None when the history does not reach back."""
    at = bisect.bisect_right(book.times, moment)
    return book.prices[at - 1] if at else None


def _remember(book: _Symbol, now: float, price: float) -> None:
    longest = book.longest()
    spacing = max(1.0, longest / POINTS)
    if book.times and now - book.times[-1] < spacing:
        book.prices[-1] = price  # the latest price of the slot, at the slot's first time
    else:
        book.times.append(now)
        book.prices.append(price)
    # Keep one point older than the longest window: it is the reference of the oldest moment.
    while len(book.times) > 1 and book.times[1] <= now - longest:
        book.times.popleft()
        book.prices.popleft()
