"""What the engine calls (repository.active_rules, repository.record_firing) against the real
database: a trigger fires a rule exactly once however often and however concurrently it is
recorded; the firing, its notification, the rule's state and the triggered event commit together.
And TestRule, the firing history, and the inbox over gRPC."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from aether.alerts.v1 import alerts_pb2, events_pb2
from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_alerts import events, repository
from aether_alerts.repository import Firing
from aether_alerts.rules import Frequency, Rule, Status
from aether_common.errors import NotFound
from aether_common.events.envelope import decode_event
from aether_devstack.testkit import failure

if TYPE_CHECKING:
    from .conftest import Alerts

MARKET = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)


async def rule_of(alerts: Alerts, rule_id: str) -> Rule:
    async with alerts.app.database.connection() as conn:
        rows = await repository.active_rules(conn, None)
        found = [r for r in rows if r.id == rule_id]
        if found:
            return found[0]
        row = await conn.fetchrow("SELECT user_id FROM rules WHERE id = $1::uuid", rule_id)
        rule = await repository.get_rule(conn, row["user_id"], rule_id)
    assert rule is not None
    return rule


async def fire(
    alerts: Alerts, rule: Rule, trigger_id: str, price: float = 201.5, *, bar: int = 0
) -> Firing | None:
    """`trigger_id` fires `rule` at `price`, in the bar `bar` minutes after MARKET."""
    return await alerts.app.database.transaction(
        lambda uow: repository.record_firing(
            uow.conn,
            rule.id,
            trigger_id=trigger_id,
            price=price,
            market_time=MARKET + timedelta(minutes=bar, seconds=30),
            title=f"{rule.symbol} above {rule.value:g}",
            body=f"{rule.symbol} traded at {price:g}",
            bar_start=MARKET + timedelta(minutes=bar),
        )
    )


async def test_active_rules_are_those_of_the_symbols_asked(alerts: Alerts) -> None:
    ada = alerts.user()
    aapl = await alerts.create(ada, symbol="AAPL")
    msft = await alerts.create(ada, symbol="MSFT", condition="price_below", value=300.0)
    paused = await alerts.create(ada, symbol="AAPL")
    await alerts.stub.PauseRule(
        alerts_pb2.PauseRuleRequest(id=paused.id), metadata=alerts.auth(ada)
    )
    soon = await alerts.create(ada, symbol="AAPL")
    async with alerts.app.database.connection() as conn:
        # A rule past its expiry is never handed to the engine.
        await conn.execute(
            "UPDATE rules SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", soon.id
        )
        of_aapl = await repository.active_rules(conn, ["aapl"])
        of_both = await repository.active_rules(conn, ["AAPL", "MSFT", "IBM"])
        every = await repository.active_rules(conn, None)
        none = await repository.active_rules(conn, [])
    assert [r.id for r in of_aapl] == [aapl.id]
    assert {r.id for r in of_both} == {aapl.id, msft.id} == {r.id for r in every}
    assert none == []
    rule = of_aapl[0]
    assert (rule.symbol, rule.condition, rule.value, rule.status) == (
        "AAPL",
        "price_above",
        200.0,
        Status.ACTIVE,
    )
    assert rule.frequency is Frequency.ONCE
    assert rule.channels == ("in_app",)
    with pytest.raises(AttributeError):  # frozen: the engine's index may share it
        rule.value = 1.0  # type: ignore[misc]


async def test_a_trigger_fires_a_rule_once_and_everything_commits_together(alerts: Alerts) -> None:
    ada = alerts.user()
    created = await alerts.create(ada, frequency="once_per_bar", interval="1m")
    rule = await rule_of(alerts, created.id)
    firing = await fire(alerts, rule, "AAPL:2026-03-02T15:30:00Z:1")
    assert firing is not None
    assert not firing.test
    # The same tick again (redelivery, a second replica, a restarted engine): nothing more.
    assert await fire(alerts, rule, "AAPL:2026-03-02T15:30:00Z:1") is None
    assert await fire(alerts, rule, "AAPL:2026-03-02T15:31:00Z:0", bar=1) is not None
    stored = (
        await alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id=rule.id), metadata=alerts.auth(ada))
    ).rule
    assert stored.fired_count == 2
    assert stored.status == "active"
    assert stored.last_fired_bar.ToDatetime(tzinfo=UTC) == MARKET + timedelta(minutes=1)
    assert abs(stored.last_fired_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(
        seconds=30
    )
    unread = await alerts.stub.UnreadCount(
        alerts_pb2.UnreadCountRequest(), metadata=alerts.auth(ada)
    )
    assert unread.unread == 2
    assert await alerts.outbox() == [events.RULE_CREATED, events.TRIGGERED, events.TRIGGERED]
    async with alerts.app.database.connection() as conn:
        row = await conn.fetchrow(
            "SELECT envelope FROM event_outbox WHERE topic = $1 ORDER BY seq LIMIT 1",
            events.TRIGGERED,
        )
    event = decode_event(EventEnvelope.FromString(row["envelope"]), events_pb2.AlertTriggered)
    payload = event.payload
    assert event.subject == ada
    assert (payload.firing_id, payload.rule_id, payload.user_id) == (firing.id, rule.id, ada)
    assert (payload.symbol, payload.condition, payload.price) == ("AAPL", "price_above", 201.5)
    assert payload.trigger_id == "AAPL:2026-03-02T15:30:00Z:1"
    assert payload.market_time.ToDatetime(tzinfo=UTC) == MARKET + timedelta(seconds=30)
    assert payload.notification_id == firing.notification_id
    assert list(payload.channels) == ["in_app"]
    assert not payload.test


async def test_concurrent_recorders_of_one_trigger_write_one_firing(alerts: Alerts) -> None:
    created = await alerts.create(alerts.user(), frequency="every_time", cooldown_s=60)
    rule = await rule_of(alerts, created.id)
    outcomes = await asyncio.gather(*(fire(alerts, rule, "tick-42") for _ in range(8)))
    assert sum(o is not None for o in outcomes) == 1
    async with alerts.app.database.connection() as conn:
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM firings) AS firings,
                      (SELECT count(*) FROM notifications) AS notes,
                      (SELECT fired_count FROM rules) AS fired,
                      (SELECT count(*) FROM event_outbox WHERE topic = $1) AS sent""",
            events.TRIGGERED,
        )
    assert dict(counts) == {"firings": 1, "notes": 1, "fired": 1, "sent": 1}


async def test_a_once_rule_is_fired_by_its_first_trigger(alerts: Alerts) -> None:
    ada = alerts.user()
    created = await alerts.create(ada)
    rule = await rule_of(alerts, created.id)
    await fire(alerts, rule, "t-1")
    stored = (
        await alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id=rule.id), metadata=alerts.auth(ada))
    ).rule
    assert stored.status == "fired"
    assert stored.version == 2
    async with alerts.app.database.connection() as conn:
        assert await repository.active_rules(conn, ["AAPL"]) == []
    # The status change is an audit event too.
    assert await alerts.outbox() == [events.RULE_CREATED, events.TRIGGERED, events.RULE_UPDATED]
    # A fired rule is armed again by updating it.
    error = await failure(
        alerts.stub.ResumeRule(alerts_pb2.ResumeRuleRequest(id=rule.id), metadata=alerts.auth(ada))
    )
    assert error.error_code == "rule_not_paused"
    again = (
        await alerts.stub.UpdateRule(
            alerts_pb2.UpdateRuleRequest(id=rule.id, spec=alerts.spec(value=210.0)),
            metadata=alerts.auth(ada),
        )
    ).rule
    assert again.status == "active"
    assert again.fired_count == 1


async def test_a_failed_transaction_leaves_no_firing(alerts: Alerts) -> None:
    """Detecting and recording are one transaction: a crash before commit loses nothing that a
    redelivery will not write again, and writes nothing half."""
    created = await alerts.create(alerts.user(), frequency="every_time", cooldown_s=60)
    rule = await rule_of(alerts, created.id)

    async def crash(uow: Any) -> None:
        await repository.record_firing(
            uow.conn, rule.id, trigger_id="t-9", price=1.0, market_time=MARKET, title="t", body="b"
        )
        raise RuntimeError("engine killed mid-way")

    with pytest.raises(RuntimeError):
        await alerts.app.database.transaction(crash)
    assert await fire(alerts, rule, "t-9") is not None  # the redelivery records it


async def test_a_test_firing_takes_the_notification_path_and_leaves_the_rule(
    alerts: Alerts,
) -> None:
    ada = alerts.user()
    rule = await alerts.create(ada)
    me = alerts.auth(ada)
    firing = (
        await alerts.stub.TestRule(alerts_pb2.TestRuleRequest(id=rule.id), metadata=me)
    ).firing
    assert firing.test
    assert firing.trigger_id.startswith("test:")
    assert firing.rule_id == rule.id
    stored = (await alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id=rule.id), metadata=me)).rule
    assert stored.status == "active"
    assert stored.fired_count == 0
    assert stored.version == 1
    inbox = await alerts.stub.ListNotifications(alerts_pb2.ListNotificationsRequest(), metadata=me)
    (note,) = inbox.notifications
    assert note.firing_id == firing.id
    assert note.title.startswith("Test: AAPL")
    assert await alerts.outbox() == [events.RULE_CREATED, events.TRIGGERED]
    history = await alerts.stub.ListFirings(
        alerts_pb2.ListFiringsRequest(rule_id=rule.id), metadata=me
    )
    assert [f.id for f in history.firings] == [firing.id]


async def test_firings_are_listed_newest_first_by_page(alerts: Alerts) -> None:
    ada = alerts.user()
    created = await alerts.create(ada, frequency="once_per_bar", interval="1m")
    rule = await rule_of(alerts, created.id)
    fired = [await fire(alerts, rule, f"t-{i}", bar=i) for i in range(5)]
    ids: list[str] = []
    cursor = ""
    while True:
        page = await alerts.stub.ListFirings(
            alerts_pb2.ListFiringsRequest(rule_id=rule.id, limit=2, cursor=cursor),
            metadata=alerts.auth(ada),
        )
        ids += [f.id for f in page.firings]
        cursor = page.next_cursor
        if not cursor:
            break
    assert ids == [f.id for f in reversed(fired) if f is not None]


async def test_the_inbox_orders_marks_read_and_counts(alerts: Alerts) -> None:
    ada = alerts.user()
    me = alerts.auth(ada)
    created = await alerts.create(ada, frequency="once_per_bar", interval="1m")
    rule = await rule_of(alerts, created.id)
    fired = [await fire(alerts, rule, f"t-{i}", bar=i) for i in range(5)]
    notes = [f.notification_id for f in fired if f is not None]  # oldest first
    await alerts.stub.MarkRead(alerts_pb2.MarkReadRequest(id=notes[3]), metadata=me)
    read_again = (
        await alerts.stub.MarkRead(alerts_pb2.MarkReadRequest(id=notes[3]), metadata=me)
    ).notification
    assert read_again.HasField("read_at")
    count = await alerts.stub.UnreadCount(alerts_pb2.UnreadCountRequest(), metadata=me)
    assert count.unread == 4

    async def listing(**fields: Any) -> list[str]:
        ids: list[str] = []
        cursor = ""
        while True:
            page = await alerts.stub.ListNotifications(
                alerts_pb2.ListNotificationsRequest(limit=2, cursor=cursor, **fields), metadata=me
            )
            ids += [n.id for n in page.notifications]
            cursor = page.next_cursor
            if not cursor:
                return ids

    newest_first = list(reversed(notes))
    assert await listing() == newest_first
    unread_first = [n for n in newest_first if n != notes[3]] + [notes[3]]
    assert await listing(unread_first=True) == unread_first
    assert await listing(unread_only=True) == unread_first[:4]
    # Another user's notification is not found; nor is garbage.
    eve = alerts.auth(alerts.user("eve"))
    for id_ in (notes[0], "nope"):
        error = await failure(
            alerts.stub.MarkRead(alerts_pb2.MarkReadRequest(id=id_), metadata=eve)
        )
        assert isinstance(error, NotFound)
    marked = await alerts.stub.MarkAllRead(alerts_pb2.MarkAllReadRequest(), metadata=me)
    assert marked.marked == 4
    count = await alerts.stub.UnreadCount(alerts_pb2.UnreadCountRequest(), metadata=me)
    assert count.unread == 0


async def test_the_stored_rule_decides_whether_a_trigger_fires_it(alerts: Alerts) -> None:
    """The engine's copy of a rule may be stale: the row, locked, is the judge."""
    ada = alerts.user()
    me = alerts.auth(ada)

    async def stale(**fields: Any) -> Rule:
        created = await alerts.create(ada, **fields)
        return await rule_of(alerts, created.id)

    once = await stale()
    assert await fire(alerts, once, "t-1") is not None
    assert await fire(alerts, once, "t-2") is None  # fired for good by t-1

    paused = await stale()
    await alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=paused.id), metadata=me)
    assert await fire(alerts, paused, "t-1") is None

    deleted = await stale()
    await alerts.stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id=deleted.id), metadata=me)
    assert await fire(alerts, deleted, "t-1") is None

    expired = await stale()
    async with alerts.app.database.connection() as conn:
        await conn.execute(
            "UPDATE rules SET expires_at = now() - interval '1 s' WHERE id = $1::uuid", expired.id
        )
    assert await fire(alerts, expired, "t-1") is None

    cooling = await stale(frequency="every_time", cooldown_s=600)
    assert await fire(alerts, cooling, "t-1") is not None
    assert await fire(alerts, cooling, "t-2") is None  # inside its 10 minutes
    async with alerts.app.database.connection() as conn:
        await conn.execute(
            "UPDATE rules SET last_fired_at = now() - interval '601 s' WHERE id = $1::uuid",
            cooling.id,
        )
    assert await fire(alerts, cooling, "t-3") is not None

    per_bar = await stale(frequency="once_per_bar", interval="1m")
    assert await fire(alerts, per_bar, "t-1", bar=0) is not None
    assert await fire(alerts, per_bar, "t-2", bar=0) is None  # another tick of the same bar
    assert await fire(alerts, per_bar, "t-3", bar=1) is not None

    # Redefined since the engine loaded it: the stored channels go out with the firing.
    redefined = await stale(frequency="every_time", cooldown_s=60)
    await alerts.stub.UpdateRule(
        alerts_pb2.UpdateRuleRequest(
            id=redefined.id,
            spec=alerts.spec(frequency="every_time", cooldown_s=60, channels=["webhook"]),
        ),
        metadata=me,
    )
    firing = await fire(alerts, redefined, "t-1")
    assert firing is not None
    async with alerts.app.database.connection() as conn:
        row = await conn.fetchrow(
            "SELECT envelope FROM event_outbox WHERE topic = $1 ORDER BY seq DESC LIMIT 1",
            events.TRIGGERED,
        )
    event = decode_event(EventEnvelope.FromString(row["envelope"]), events_pb2.AlertTriggered)
    assert event.payload.firing_id == firing.id
    assert list(event.payload.channels) == ["webhook"]
