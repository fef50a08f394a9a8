"""Percent moves on market time (engine_moves.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aether_alerts.engine_moves import MoveWatch

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_move_fires_the_rules_it_reaches_once_the_window_is_covered() -> None:
    watch = MoveWatch()
    watch.add("small", "X", 2.0, 60)
    watch.add("big", "X", 5.0, 60)
    watch.add("slow", "X", 2.0, 3600)
    assert watch.move("X", at(0), 100.0) == []
    assert watch.move("X", at(30), 104.0) == []  # 60 s of history not there yet
    assert sorted(watch.move("X", at(61), 103.0)) == ["small"]  # vs 100 at 0 s: +3%
    assert sorted(watch.move("X", at(95), 98.0)) == ["big", "small"]  # vs 104 at 30 s: -5.8%
    assert sorted(watch.move("X", at(100), 94.0)) == ["big", "small"]  # vs 104: -9.6%
    assert watch.move("Y", at(100), 1.0) == []


def test_either_way_and_down_moves() -> None:
    watch = MoveWatch()
    watch.add("r", "X", 10.0, 10)
    watch.move("X", at(0), 100.0)
    assert watch.move("X", at(11), 89.0) == ["r"]
    assert watch.move("X", at(12), 100.0) == []  # vs 100 at 0 s (the last at or before 2 s)


def test_removed_rules_and_reset_history() -> None:
    watch = MoveWatch()
    watch.add("r", "X", 1.0, 10)
    watch.move("X", at(0), 100.0)
    watch.reset("X")  # a replay's new pass: history starts again
    assert watch.move("X", at(11), 150.0) == []
    assert watch.move("X", at(22), 200.0) == ["r"]
    watch.remove("r")
    assert watch.move("X", at(40), 300.0) == []
    assert len(watch) == 0


def test_history_stays_small_whatever_the_tick_rate() -> None:
    watch = MoveWatch()
    watch.add("r", "X", 50.0, 100)
    for n in range(20_000):  # ten ticks a second for 2,000 s
        watch.move("X", at(n / 10), 100.0)
    book = watch._symbols["X"]
    assert len(book.times) <= 102  # one point a second (the spacing floor), the window's worth
