"""The price index: which rules a price move fires, found without looking at the others.

Per symbol, the thresholds of its price rules sit in sorted numpy arrays, one per kind of edge:

| array   | rules (threshold)                              | a move p0 -> p1 fires           |
|---------|------------------------------------------------|---------------------------------|
| `above` | price_above (value)                            | value <= p1 (level: while above)|
| `below` | price_below (value)                            | value >= p1                     |
| `up`    | crossing_up (value); channels (their lower)     | p0 < value <= p1                |
| `down`  | crossing_down (value); channels (their upper)   | p1 <= value < p0                |

A channel rule (entering_channel / exiting_channel, `lower` < `upper`) has an edge in `up` at
its lower bound and one in `down` at its upper bound for entering (the ways in), and the
reverse for exiting (`down` at lower, `up` at upper: the ways out); a candidate is kept when
the move really went in (p1 inside, p0 outside) or out. Level rules fire on the first price
of a symbol too; edges need a previous price (the last one this index saw, `reset` forgets it,
e.g. when a replay starts a new pass).

A move costs two binary searches per array, plus the rules it fires. Rules come and go between
moves: additions wait in a small unsorted list (scanned per move) until it is merged into the
arrays (`MERGE_AT`); removals are a mask. So adding or removing a rule is O(1) and a merge is
O(n) once per MERGE_AT changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

MERGE_AT = 512

# The kinds of edge, as positions in a symbol's book (a list: the hot path indexes it).
LEVEL_ABOVE, LEVEL_BELOW, EDGE_UP, EDGE_DOWN = 0, 1, 2, 3
# A channel's edges are kept apart: their candidates need the in/out check and may come twice.
CHANNEL_UP, CHANNEL_DOWN = 4, 5
KINDS = (LEVEL_ABOVE, LEVEL_BELOW, EDGE_UP, EDGE_DOWN, CHANNEL_UP, CHANNEL_DOWN)
PRICE_CONDITIONS = frozenset(
    {
        "price_above",
        "price_below",
        "crossing_up",
        "crossing_down",
        "entering_channel",
        "exiting_channel",
    }
)


@dataclass(frozen=True, slots=True)
class PriceRule:
    """What the index needs of a rule: `value` for the four single-threshold conditions,
    `lower` and `upper` for the channels."""

    rule_id: str
    symbol: str
    condition: str
    value: float = 0.0
    lower: float = 0.0
    upper: float = 0.0

    def edges(self) -> list[tuple[int, float]]:
        c = self.condition
        if c == "price_above":
            return [(LEVEL_ABOVE, self.value)]
        if c == "price_below":
            return [(LEVEL_BELOW, self.value)]
        if c == "crossing_up":
            return [(EDGE_UP, self.value)]
        if c == "crossing_down":
            return [(EDGE_DOWN, self.value)]
        if c == "entering_channel":
            return [(CHANNEL_UP, self.lower), (CHANNEL_DOWN, self.upper)]
        if c == "exiting_channel":
            # The channel includes its bounds: out is below `lower` or above `upper`, so the
            # edges sit one float beyond them (p0 <= upper < p1 is p0 < next(upper) <= p1).
            below, above = (
                math.nextafter(self.lower, -math.inf),
                math.nextafter(self.upper, math.inf),
            )
            return [(CHANNEL_DOWN, below), (CHANNEL_UP, above)]
        raise ValueError(f"not a price condition: {c!r}")

    def holds(self, before: float | None, after: float) -> bool:
        """The condition itself, for the candidates the arrays found (channels: in or out)."""
        c = self.condition
        if c in ("entering_channel", "exiting_channel"):
            inside_after = self.lower <= after <= self.upper
            inside_before = before is not None and self.lower <= before <= self.upper
            if c == "entering_channel":
                return inside_after and before is not None and not inside_before
            return inside_before and not inside_after
        return True


@dataclass
class _Edges:
    """One kind of edge of one symbol: sorted thresholds, their rules, and what waits."""

    values: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    rules: list[str] = field(default_factory=list)
    pending: list[tuple[float, str]] = field(default_factory=list)

    def merge(self) -> None:
        if not self.pending:
            return
        values = np.concatenate([self.values, np.fromiter((v for v, _ in self.pending), float)])
        rules = [*self.rules, *(r for _, r in self.pending)]
        order = np.argsort(values, kind="stable")
        self.values = values[order]
        self.rules = [rules[i] for i in order.tolist()]
        self.pending = []

    def between(self, low: float, high: float, *, low_open: bool, high_open: bool) -> list[str]:
        """Rules whose threshold lies between `low` and `high` (ends open or closed)."""
        i = int(self.values.searchsorted(low, "right" if low_open else "left"))
        j = int(self.values.searchsorted(high, "left" if high_open else "right"))
        found = self.rules[i:j]
        for value, rule in self.pending:
            if (value > low if low_open else value >= low) and (
                value < high if high_open else value <= high
            ):
                found.append(rule)
        return found


class PriceIndex:
    def __init__(self, *, merge_at: int = MERGE_AT) -> None:
        self._merge_at = merge_at
        self._edges: dict[str, list[_Edges]] = {}
        self._rules: dict[str, PriceRule] = {}
        # Removed rules whose edges are still in the arrays (masked until a compaction).
        self._removed: dict[str, PriceRule] = {}
        self._last: dict[str, float] = {}
        # Symbols with edges not merged into their arrays yet, and with channel rules: the hot
        # path looks at those only for these.
        self._waiting: set[str] = set()
        self._channeled: set[str] = set()

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: PriceRule) -> None:
        """Index a rule (replacing one with its id)."""
        earlier = self._rules.pop(rule.rule_id, None) or self._removed.pop(rule.rule_id, None)
        if earlier is not None:  # its old edges go now: they carry the same id
            self._compact(earlier.symbol)
        self._rules[rule.rule_id] = rule
        book = self._edges.setdefault(rule.symbol, [_Edges() for _ in KINDS])
        waiting = 0
        for kind, value in rule.edges():
            book[kind].pending.append((value, rule.rule_id))
            waiting = max(waiting, len(book[kind].pending))
            if kind in (CHANNEL_UP, CHANNEL_DOWN):
                self._channeled.add(rule.symbol)
        self._waiting.add(rule.symbol)
        if waiting >= self._merge_at:
            self._compact(rule.symbol)

    def add_all(self, rules: Iterable[PriceRule]) -> None:
        """Many rules at once (a start): each array sorted once."""
        for rule in rules:
            self._rules[rule.rule_id] = rule
            book = self._edges.setdefault(rule.symbol, [_Edges() for _ in KINDS])
            for kind, value in rule.edges():
                book[kind].pending.append((value, rule.rule_id))
                if kind in (CHANNEL_UP, CHANNEL_DOWN):
                    self._channeled.add(rule.symbol)
        for book in self._edges.values():
            for edges in book:
                edges.merge()
        self._waiting.clear()

    def remove(self, rule_id: str) -> None:
        rule = self._rules.pop(rule_id, None)
        if rule is not None:
            self._removed[rule_id] = rule
            if len(self._removed) >= self._merge_at:
                self._drop_removed()

    def reset(self, symbol: str) -> None:
        """Forget the symbol's last price: its next price moves no edge."""
        self._last.pop(symbol, None)

    def move(self, symbol: str, price: float) -> list[str]:
        """The symbol's price is now `price`: the ids of the rules that fire (each once)."""
        return self.moves([(symbol, price)])[0]

    def moves(self, ticks: Sequence[tuple[str, float]]) -> list[list[str]]:
        """Many moves in order: per tick, the ids of the rules it fired (each once).
        The hot path of the engine: written out, with what it uses bound once per batch, so
        that a move costs about what its binary searches cost (bench/alerts.py)."""
        last, books, rules = self._last, self._edges, self._rules
        waiting_symbols, channeled, removed = self._waiting, self._channeled, self._removed
        out: list[list[str]] = []
        for symbol, price in ticks:
            before = last.get(symbol)
            last[symbol] = price
            book = books.get(symbol)
            if book is None:
                out.append([])
                continue
            above, below, up, down, channel_up, channel_down = book
            ids = above.rules[: int(above.values.searchsorted(price, "right"))]
            ids += below.rules[int(below.values.searchsorted(price, "left")) :]
            waiting = symbol in waiting_symbols
            if waiting:
                ids += [r for v, r in above.pending if v <= price]
                ids += [r for v, r in below.pending if v >= price]
            channel: list[str] = []
            if before is None or price == before:
                pass
            elif price > before:  # the edges in (before, price]
                i = int(up.values.searchsorted(before, "right"))
                ids += up.rules[i : int(up.values.searchsorted(price, "right"))]
                if waiting:
                    ids += [r for v, r in up.pending if before < v <= price]
                if symbol in channeled:
                    channel = channel_up.between(before, price, low_open=True, high_open=False)
            else:  # the edges in [price, before)
                i = int(down.values.searchsorted(price, "left"))
                ids += down.rules[i : int(down.values.searchsorted(before, "left"))]
                if waiting:
                    ids += [r for v, r in down.pending if price <= v < before]
                if symbol in channeled:
                    channel = channel_down.between(price, before, low_open=False, high_open=True)
            if removed:  # masked until the next compaction
                ids = [rule_id for rule_id in ids if rule_id in rules]
            if channel:
                for rule_id in dict.fromkeys(channel):  # a channel may come twice: once is enough
                    rule = rules.get(rule_id)
                    if rule is not None and rule.holds(before, price):
                        ids.append(rule_id)
            out.append(ids)
        return out

    def rule(self, rule_id: str) -> PriceRule | None:
        return self._rules.get(rule_id)

    def _compact(self, symbol: str) -> None:
        """Drop the symbol's edges of rules no longer indexed, and merge what waits."""
        for edges in self._edges[symbol]:
            keep = [i for i, r in enumerate(edges.rules) if r in self._rules]
            if len(keep) < len(edges.rules):
                edges.values = edges.values[keep]
                edges.rules = [edges.rules[i] for i in keep]
            edges.pending = [(v, r) for v, r in edges.pending if r in self._rules]
            edges.merge()
        self._waiting.discard(symbol)

    def _drop_removed(self) -> None:
        for symbol in self._edges:
            self._compact(symbol)
        self._removed.clear()
