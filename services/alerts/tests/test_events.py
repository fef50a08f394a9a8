"""Events on the real broker: the outbox relay publishes rule changes (key = user id); auth's
`aether.user.deleted.v1` erases the user's rules, firings and inbox, once however often it is
delivered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aether.alerts.v1 import alerts_pb2, events_pb2
from aether.auth.v1 import events_pb2 as auth_events
from aether_alerts import consumers, events, repository
from aether_common.events import Event, EventProducer, event_from_record
from aether_devstack.testkit import eventually, read_topic

if TYPE_CHECKING:
    from .conftest import Alerts, StartAlerts


async def test_rule_changes_are_published_keyed_by_user(
    start_alerts: StartAlerts, topic_prefix: str
) -> None:
    alerts = await start_alerts(events=True, topic_prefix=topic_prefix)
    ada = alerts.user()
    rule = await alerts.create(ada)
    await alerts.stub.DeleteRule(
        alerts_pb2.DeleteRuleRequest(id=rule.id), metadata=alerts.auth(ada)
    )
    bootstrap = alerts.app.settings.kafka_bootstrap
    (created,) = await read_topic(bootstrap, topic_prefix + events.RULE_CREATED, 1)
    (deleted,) = await read_topic(bootstrap, topic_prefix + events.RULE_DELETED, 1)
    assert created.key == deleted.key == ada.encode()
    event = event_from_record(created.headers, created.value, events_pb2.RuleCreated)
    assert event.payload.rule == rule
    gone = event_from_record(deleted.headers, deleted.value, events_pb2.RuleDeleted)
    assert gone.payload.rule.id == rule.id


async def count_of(alerts: Alerts, user_id: str) -> tuple[int, int, int]:
    async with alerts.app.database.connection() as conn:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM rules WHERE user_id = $1) AS rules,
                      (SELECT count(*) FROM firings WHERE user_id = $1) AS firings,
                      (SELECT count(*) FROM notifications WHERE user_id = $1) AS notes""",
            user_id,
        )
    return row["rules"], row["firings"], row["notes"]


async def test_a_deleted_account_loses_its_rules_firings_and_inbox(
    start_alerts: StartAlerts, topic_prefix: str
) -> None:
    alerts = await start_alerts(events=True, topic_prefix=topic_prefix)
    ada, bob = alerts.user("ada"), alerts.user("bob")
    for user in (ada, bob):
        rule = await alerts.create(user, frequency="every_time", cooldown_s=60)
        await alerts.stub.TestRule(
            alerts_pb2.TestRuleRequest(id=rule.id), metadata=alerts.auth(user)
        )
    async with alerts.app.database.connection() as conn:
        (adas,) = [r for r in await repository.active_rules(conn, ["AAPL"]) if r.user_id == ada]
    await alerts.app.database.transaction(
        lambda uow: repository.record_firing(
            uow.conn,
            adas.id,
            trigger_id="tick-1",
            price=201.0,
            market_time=datetime.now(UTC),
            title="AAPL above 200",
            body="AAPL traded at 201",
        )
    )
    assert await count_of(alerts, ada) == (1, 2, 2)
    producer = EventProducer(alerts.app.settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        deleted = Event(
            type=topic_prefix + consumers.USER_DELETED,
            subject=ada,
            payload=auth_events.UserDeleted(user_id=ada),
            source="auth",
        )
        await producer.publish(deleted)
        await producer.publish(deleted)  # redelivered: the same event id
    finally:
        await producer.stop()

    async def erased() -> bool:
        return await count_of(alerts, ada) == (0, 0, 0)

    await eventually(erased, within=30, what="ada's alerts erased")
    assert await count_of(alerts, bob) == (1, 1, 1)
