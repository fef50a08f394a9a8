"""The price index against a plain scan of every rule (the oracle), on random rules and moves."""

from __future__ import annotations

import random

import pytest

from aether_alerts.engine_index import PriceIndex, PriceRule

CONDITIONS = [
    "price_above",
    "price_below",
    "crossing_up",
    "crossing_down",
    "entering_channel",
    "exiting_channel",
]


def fires(rule: PriceRule, before: float | None, after: float) -> bool:
    """The conditions as a user reads them, one rule at a time."""
    c = rule.condition
    if c == "price_above":
        return after >= rule.value
    if c == "price_below":
        return after <= rule.value
    if before is None:
        return False
    if c == "crossing_up":
        return before < rule.value <= after
    if c == "crossing_down":
        return before > rule.value >= after
    inside_before = rule.lower <= before <= rule.upper
    inside_after = rule.lower <= after <= rule.upper
    if c == "entering_channel":
        return inside_after and not inside_before
    return inside_before and not inside_after


def random_rule(rnd: random.Random, n: int, symbols: list[str]) -> PriceRule:
    condition = rnd.choice(CONDITIONS)
    lower = round(rnd.uniform(90, 110), 1)
    return PriceRule(
        rule_id=f"r{n}",
        symbol=rnd.choice(symbols),
        condition=condition,
        value=round(rnd.uniform(90, 110), 1),  # round: thresholds hit exactly now and then
        lower=lower,
        upper=round(lower + rnd.uniform(0.1, 8), 1),
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_index_fires_exactly_what_a_scan_of_all_rules_fires(seed: int) -> None:
    rnd = random.Random(seed)
    symbols = ["AAA", "BBB", "CCC"]
    rules = {f"r{n}": random_rule(rnd, n, symbols) for n in range(600)}
    index = PriceIndex(merge_at=16)  # small: merges and compactions happen during the test
    index.add_all(list(rules.values())[:300])
    for rule in list(rules.values())[300:]:
        index.add(rule)
    last: dict[str, float] = {}
    price = dict.fromkeys(symbols, 100.0)
    for step in range(3000):
        symbol = rnd.choice(symbols)
        price[symbol] = round(min(115, max(85, price[symbol] + rnd.uniform(-2, 2))), 1)
        if step % 7 == 0:  # rules come and go between moves, some come back changed
            victim = rnd.choice(sorted(rules))
            index.remove(victim)
            del rules[victim]
        if step % 11 == 0:
            new = random_rule(rnd, 10_000 + step, symbols)
            if step % 3 == 0 and rules:  # an update: the same id, another threshold
                new = PriceRule(rnd.choice(sorted(rules)), new.symbol, new.condition,
                                new.value, new.lower, new.upper)  # fmt: skip
            rules[new.rule_id] = new
            index.add(new)
        before = last.get(symbol)
        expected = sorted(
            r.rule_id
            for r in rules.values()
            if r.symbol == symbol and fires(r, before, price[symbol])
        )
        got = sorted(index.move(symbol, price[symbol]))
        assert got == expected, (
            step,
            symbol,
            before,
            price[symbol],
            sorted(set(got) ^ set(expected)),
            [rules.get(x) for x in set(got) ^ set(expected)],
        )
        last[symbol] = price[symbol]
    assert len(index) == len(rules)


def test_edges_need_a_previous_price_and_reset_forgets_it() -> None:
    index = PriceIndex()
    index.add(PriceRule("up", "X", "crossing_up", value=10))
    index.add(PriceRule("lvl", "X", "price_above", value=10))
    assert index.move("X", 11) == ["lvl"]  # no previous price: no edge
    assert index.move("X", 9) == []
    assert set(index.move("X", 10)) == {"up", "lvl"}  # a touch crosses
    index.reset("X")
    assert index.move("X", 12) == ["lvl"]


def test_a_jump_over_a_channel_neither_enters_nor_exits_it() -> None:
    index = PriceIndex()
    index.add(PriceRule("in", "X", "entering_channel", lower=10, upper=20))
    index.add(PriceRule("out", "X", "exiting_channel", lower=10, upper=20))
    index.move("X", 5)
    assert index.move("X", 25) == []
    assert index.move("X", 15) == ["in"]
    assert index.move("X", 30) == ["out"]
