"""ExportMyData (the GDPR export) against the real PostgreSQL: the caller's contact, rules,
firings, inbox, deliveries and webhook URLs (never a secret), and nobody else's; the worker
acting for the user gets the same document; other callers naming a user are refused; a delegate
is not an admin; past a limit the export is refused, not cut."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import orjson
import pytest

from aether.alerts.v1 import alerts_pb2, events_pb2
from aether_alerts import delivery, repository
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_devstack import testkit
from aether_devstack.testkit import eventually, failure

if TYPE_CHECKING:
    from .conftest import Alerts, StartAlerts

Metadata = tuple[tuple[str, str], ...]


def service(alerts: Alerts, name: str) -> Metadata:
    """A service token's metadata, as auth issues it (subject `service:<name>`)."""
    return testkit.bearer_metadata(
        alerts.token(f"service:{name}", roles=["service"], perms=[], plan=None)
    )


def acting_for(metadata: Metadata, user_id: str) -> Metadata:
    return (*metadata, (ON_BEHALF_OF_KEY, user_id))


async def export(alerts: Alerts, metadata: Metadata) -> dict[str, Any]:
    answer = await alerts.stub.ExportMyData(alerts_pb2.ExportMyDataRequest(), metadata=metadata)
    document: dict[str, Any] = orjson.loads(answer.json)
    return document


@pytest.fixture
async def alerts(start_alerts: StartAlerts) -> Alerts:
    """The service whose deliveries settle at once (one attempt each), so two exports read the
    same rows."""
    return await start_alerts(delivery_max_attempts=1, delivery_poll_s=0.05)


async def deliveries(alerts: Alerts, firing: alerts_pb2.Firing, channels: list[str]) -> None:
    """What the dispatcher records for an alert.triggered event (these tests run without
    Kafka), then waits until every delivery is sent or failed."""
    triggered = events_pb2.AlertTriggered(
        firing_id=firing.id, rule_id=firing.rule_id, user_id=firing.user_id, channels=channels
    )
    await alerts.app.database.transaction(
        lambda uow: delivery.record_deliveries(uow.conn, triggered)
    )

    async def settled() -> bool:
        async with alerts.app.database.connection() as conn:
            due = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying')"
            )
        return bool(due == 0)

    await eventually(settled, within=15, what="the deliveries sent or failed")


async def two_users_data(alerts: Alerts) -> dict[str, Any]:
    """Ada: a contact address, an active rule that test-fired (read in the inbox), a paused one,
    a webhook endpoint. Bob: his own rule and firing."""
    ada, bob = alerts.user("ada"), alerts.user("bob")
    await alerts.app.database.transaction(
        lambda uow: repository.set_contact(uow.conn, ada, f"{ada}@example.com", replace=True)
    )
    fired = await alerts.create(ada, channels=["in_app", "webhook"])
    paused = await alerts.create(ada, symbol="MSFT", value=400.0)
    await alerts.stub.PauseRule(
        alerts_pb2.PauseRuleRequest(id=paused.id), metadata=alerts.auth(ada)
    )
    hook = await alerts.stub.CreateWebhook(
        alerts_pb2.CreateWebhookRequest(url="https://hooks.example.com/ada"),
        metadata=alerts.auth(ada),
    )
    tested = await alerts.stub.TestRule(
        alerts_pb2.TestRuleRequest(id=fired.id), metadata=alerts.auth(ada)
    )
    inbox = await alerts.stub.ListNotifications(
        alerts_pb2.ListNotificationsRequest(), metadata=alerts.auth(ada)
    )
    [note] = inbox.notifications
    await alerts.stub.MarkRead(alerts_pb2.MarkReadRequest(id=note.id), metadata=alerts.auth(ada))
    theirs = await alerts.create(bob, symbol="EURUSD", value=1.2)
    their_test = await alerts.stub.TestRule(
        alerts_pb2.TestRuleRequest(id=theirs.id), metadata=alerts.auth(bob)
    )
    # What the dispatcher makes of the firings (it runs with events; these tests have none).
    await deliveries(alerts, tested.firing, ["in_app", "webhook"])
    await deliveries(alerts, their_test.firing, ["in_app"])
    return {
        "ada": ada,
        "bob": bob,
        "fired": fired,
        "paused": paused,
        "hook": hook,
        "firing": tested.firing,
        "note": note,
        "theirs": theirs,
    }


async def test_the_export_holds_exactly_the_caller_s_data(alerts: Alerts) -> None:
    d = await two_users_data(alerts)
    ada = d["ada"]

    document = await export(alerts, alerts.auth(ada))

    assert document["service"] == "alerts"
    assert document["version"] == 1
    assert document["user_id"] == ada
    assert document["exported_at"]
    assert document["contact"]["email"] == f"{ada}@example.com"
    assert document["contact"]["updated_at"]
    rules = {rule["id"]: rule for rule in document["rules"]}
    assert set(rules) == {d["fired"].id, d["paused"].id}
    assert rules[d["paused"].id]["status"] == "paused"
    assert rules[d["paused"].id]["symbol"] == "MSFT"
    fired = rules[d["fired"].id]
    assert set(fired) == {
        "id",
        "symbol",
        "condition",
        "value",
        "params",
        "interval",
        "frequency",
        "cooldown_s",
        "expires_at",
        "channels",
        "status",
        "version",
        "created_at",
        "updated_at",
        "last_fired_at",
        "last_fired_bar",
        "fired_count",
    }
    assert (fired["symbol"], fired["condition"], fired["value"]) == ("AAPL", "price_above", 200.0)
    assert fired["channels"] == ["in_app", "webhook"]

    [firing] = document["firings"]
    assert firing["id"] == d["firing"].id
    assert firing["rule_id"] == d["fired"].id
    assert firing["test"] is True
    assert firing["notification_id"] == d["note"].id
    assert set(firing) == {
        "id",
        "rule_id",
        "symbol",
        "condition",
        "trigger_id",
        "price",
        "market_time",
        "fired_at",
        "test",
        "notification_id",
    }
    [note] = document["notifications"]
    assert note["id"] == d["note"].id
    assert note["firing_id"] == d["firing"].id
    assert note["read_at"] is not None
    assert note["title"]
    channels = {row["channel"] for row in document["deliveries"]}
    assert channels == {"in_app", f"webhook:{d['hook'].webhook.id}"}
    for row in document["deliveries"]:
        assert set(row) == {
            "id",
            "firing_id",
            "channel",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "sent_at",
            "payload",
            "created_at",
            "updated_at",
        }
        assert row["firing_id"] == d["firing"].id
        assert row["payload"]["firing_id"] == d["firing"].id
        assert row["attempts"] == 1
    statuses = {row["channel"].split(":")[0]: row["status"] for row in document["deliveries"]}
    assert statuses == {"in_app": "sent", "webhook": "failed"}  # its host does not resolve
    [hook] = document["webhooks"]
    assert hook == {
        "id": d["hook"].webhook.id,
        "url": "https://hooks.example.com/ada",
        "created_at": hook["created_at"],
        "rotated_at": None,
    }
    # No secret, in any form.
    assert d["hook"].secret not in str(document)
    assert "secret" not in str(document)

    # Bob's has his own and none of Ada's.
    theirs = await export(alerts, alerts.auth(d["bob"]))
    assert [rule["id"] for rule in theirs["rules"]] == [d["theirs"].id]
    assert [f["rule_id"] for f in theirs["firings"]] == [d["theirs"].id]
    assert len(theirs["notifications"]) == 1
    assert {x["firing_id"] for x in theirs["deliveries"]} == {theirs["firings"][0]["id"]}
    assert theirs["webhooks"] == []
    assert theirs["contact"] is None


async def test_a_user_with_nothing_gets_an_empty_export(alerts: Alerts) -> None:
    nobody = alerts.user("nobody")
    document = await export(alerts, alerts.auth(nobody))
    assert document["user_id"] == nobody
    assert document["contact"] is None
    for section in ("rules", "firings", "notifications", "deliveries", "webhooks"):
        assert document[section] == [], section


async def test_the_worker_acting_for_the_user_gets_the_same_document(alerts: Alerts) -> None:
    d = await two_users_data(alerts)

    own = await export(alerts, alerts.auth(d["ada"]))
    delegated = await export(alerts, acting_for(service(alerts, "worker"), d["ada"]))

    own.pop("exported_at")
    delegated.pop("exported_at")
    assert delegated == own


async def test_other_callers_naming_a_user_are_refused(alerts: Alerts) -> None:
    d = await two_users_data(alerts)
    callers = {
        "another service": service(alerts, "chat"),
        "a user's token": alerts.auth(d["bob"]),
        "an admin's token": alerts.admin(d["bob"]),
    }
    for who, metadata in callers.items():
        refused = await failure(
            alerts.stub.ExportMyData(
                alerts_pb2.ExportMyDataRequest(), metadata=acting_for(metadata, d["ada"])
            )
        )
        assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED, who
        assert refused.error_code == "delegation_refused", who
    anonymous = await failure(alerts.stub.ExportMyData(alerts_pb2.ExportMyDataRequest()))
    assert anonymous.grpc_code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_delegate_is_not_an_admin(start_alerts: StartAlerts) -> None:
    # One active rule allowed on the free plan; an admin may have a thousand.
    alerts = await start_alerts(quota_free=1)
    admin = alerts.user("admin")
    worker = acting_for(service(alerts, "worker"), admin)
    await alerts.stub.CreateRule(alerts_pb2.CreateRuleRequest(spec=alerts.spec()), metadata=worker)

    over = await failure(
        alerts.stub.CreateRule(alerts_pb2.CreateRuleRequest(spec=alerts.spec()), metadata=worker)
    )

    assert over.grpc_code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert over.error_code == "alert_quota_exceeded"
    # The rule the delegate made is the user's own.
    listed = await alerts.stub.ListRules(
        alerts_pb2.ListRulesRequest(), metadata=alerts.admin(admin)
    )
    assert len(listed.rules) == 1


async def test_only_the_services_listed_may_delegate(start_alerts: StartAlerts) -> None:
    alerts = await start_alerts(delegating_services=[])
    refused = await failure(
        alerts.stub.ExportMyData(
            alerts_pb2.ExportMyDataRequest(),
            metadata=acting_for(service(alerts, "worker"), alerts.user("ada")),
        )
    )
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED


async def test_an_export_past_its_limits_is_refused_not_cut(start_alerts: StartAlerts) -> None:
    alerts = await start_alerts(export_max_records=1)
    ada = alerts.user("ada")
    await alerts.create(ada)
    await alerts.create(ada, symbol="MSFT", value=400.0)

    refused = await failure(
        alerts.stub.ExportMyData(alerts_pb2.ExportMyDataRequest(), metadata=alerts.auth(ada))
    )

    assert refused.grpc_code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.error_code == "export_too_large"
    assert "rules" in refused.detail
