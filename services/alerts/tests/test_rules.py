"""The rules API over real gRPC and PostgreSQL: validation (4xx naming the field), symbols
checked with charts, per-plan quotas, owners only, paging, and the audit events in the outbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether.alerts.v1 import alerts_pb2
from aether_alerts import events
from aether_common.errors import (
    NotFound,
    PreconditionFailed,
    RateLimited,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from aether_devstack.testkit import failure

if TYPE_CHECKING:  # test modules share fixtures, not imports
    from .conftest import Alerts, StartAlerts


def ts(time: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(time)
    return out


async def test_a_rule_is_created_read_and_listed(alerts: Alerts) -> None:
    ada = alerts.user("ada")
    rule = await alerts.create(ada, symbol="aapl", channels=["in_app", "email", "in_app"])
    assert rule.user_id == ada
    assert rule.status == "active"
    assert rule.version == 1
    assert rule.fired_count == 0
    assert rule.spec.symbol == "AAPL"  # normalised
    assert list(rule.spec.channels) == ["in_app", "email"]  # deduplicated, in order
    got = (
        await alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id=rule.id), metadata=alerts.auth(ada))
    ).rule
    assert got == rule
    listed = await alerts.stub.ListRules(alerts_pb2.ListRulesRequest(), metadata=alerts.auth(ada))
    assert list(listed.rules) == [rule]
    assert listed.next_cursor == ""
    assert await alerts.outbox() == [events.RULE_CREATED]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"symbol": ""}, "symbol"),
        ({"symbol": "AA PL"}, "symbol"),
        ({"condition": "price_sideways"}, "condition"),
        ({"value": 0.0}, "value"),
        ({"value": -5.0}, "value"),
        ({"value": float("nan")}, "value"),
        ({"condition": "entering_channel", "value": 0.0}, "params.lower"),
        (
            {"condition": "exiting_channel", "value": 0.0, "params": {"lower": 20, "upper": 10}},
            "params",
        ),
        ({"condition": "percent_move", "value": 5.0}, "params.window_s"),
        (
            {"condition": "percent_move", "value": 5.0, "params": {"window_s": 0.5}},
            "params.window_s",
        ),
        ({"condition": "rsi_above", "value": 70.0}, "interval"),
        ({"condition": "rsi_below", "value": 130.0, "interval": "1h"}, "value"),
        (
            {"condition": "rsi_above", "value": 70.0, "interval": "1h", "params": {"length": 3}},
            "params",
        ),
        (
            {"condition": "macd_cross", "value": 0.0, "interval": "1d", "params": {"fast": 30}},
            "params",
        ),
        ({"condition": "price_cross_sma", "value": 0.0, "interval": "7m"}, "interval"),
        (
            {
                "condition": "price_cross_ema",
                "value": 0.0,
                "interval": "1h",
                "params": {"period": 1.5},
            },
            "params.period",
        ),
        ({"frequency": "sometimes"}, "frequency"),
        ({"frequency": "once_per_bar"}, "interval"),
        ({"frequency": "every_time"}, "cooldown_s"),
        ({"frequency": "every_time", "cooldown_s": 5}, "cooldown_s"),
        ({"cooldown_s": 300}, "cooldown_s"),
        ({"channels": []}, "channels"),
        ({"channels": ["in_app", "pigeon"]}, "channels"),
        ({"expires_at": ts(datetime.now(UTC) - timedelta(minutes=1))}, "expires_at"),
    ],
)
async def test_a_bad_definition_is_refused_naming_the_field(
    alerts: Alerts, fields: dict[str, Any], field: str
) -> None:
    error = await failure(alerts.create(alerts.user(), **fields))
    assert isinstance(error, ValidationFailed), error
    assert field in error.field_errors, error.field_errors
    assert error.detail  # a message for the user


@pytest.mark.parametrize(
    "fields",
    [
        {"condition": "crossing_down", "value": 150.0},
        {"condition": "entering_channel", "value": 0.0, "params": {"lower": 180, "upper": 200}},
        {"condition": "percent_move", "value": 2.5, "params": {"window_s": 3600}},
        {"condition": "rsi_below", "value": 30.0, "interval": "1h"},
        {"condition": "macd_cross", "value": 0.0, "interval": "1d"},
        {"condition": "price_cross_ema", "value": 0.0, "interval": "15m", "params": {"period": 50}},
        {"frequency": "once_per_bar", "interval": "5m"},
        {"frequency": "every_time", "cooldown_s": 600},
        {"symbol": "BRK.B", "expires_at": ts(datetime.now(UTC) + timedelta(days=30))},
    ],
)
async def test_every_kind_of_rule_is_accepted(alerts: Alerts, fields: dict[str, Any]) -> None:
    rule = await alerts.create(alerts.user(), **fields)
    assert rule.status == "active"


async def test_indicator_parameters_get_their_defaults(alerts: Alerts) -> None:
    rule = await alerts.create(alerts.user(), condition="macd_cross", value=0.0, interval="1d")
    assert dict(rule.spec.params) == {"fast": 12, "slow": 26, "signal": 9}


async def test_an_unknown_symbol_is_refused_after_asking_charts(
    alerts: Alerts, charts_peer: Any
) -> None:
    ada = alerts.user()
    error = await failure(alerts.create(ada, symbol="NOPE"))
    assert isinstance(error, ValidationFailed)
    assert error.error_code == "unknown_symbol"
    assert "NOPE" in error.detail
    (call,) = charts_peer.calls_to("GetQuote")
    assert call.request.symbol == "NOPE"
    # The caller's own token went to charts (charts checks who asks).
    assert call.metadata["authorization"] == dict(alerts.auth(ada))["authorization"]


async def test_charts_away_is_unavailable_and_nothing_is_stored(
    alerts: Alerts, charts_peer: Any
) -> None:
    charts_peer.answers["GetQuote"] = Unavailable("charts is restarting")
    ada = alerts.user()
    error = await failure(alerts.create(ada))
    assert isinstance(error, Unavailable)
    listed = await alerts.stub.ListRules(alerts_pb2.ListRulesRequest(), metadata=alerts.auth(ada))
    assert not listed.rules


async def test_the_quota_of_active_rules_depends_on_the_plan(start_alerts: StartAlerts) -> None:
    alerts = await start_alerts(quota_free=2, quota_premium=3)
    ada = alerts.user()
    first = await alerts.create(ada)
    await alerts.create(ada)
    error = await failure(alerts.create(ada))
    assert isinstance(error, RateLimited)
    assert error.error_code == "alert_quota_exceeded"
    assert "free plan allows 2" in error.detail
    # A paused rule does not count; resuming it counts again.
    await alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=first.id), metadata=alerts.auth(ada))
    await alerts.create(ada)
    error = await failure(
        alerts.stub.ResumeRule(alerts_pb2.ResumeRuleRequest(id=first.id), metadata=alerts.auth(ada))
    )
    assert isinstance(error, RateLimited)
    # A premium token gets the premium quota.
    premium = alerts.auth(ada, plan="premium")
    await alerts.stub.ResumeRule(alerts_pb2.ResumeRuleRequest(id=first.id), metadata=premium)


async def test_concurrent_creates_never_exceed_the_quota(start_alerts: StartAlerts) -> None:
    alerts = await start_alerts(quota_free=3)
    ada = alerts.user()
    outcomes = await asyncio.gather(*(alerts.create(ada) for _ in range(8)), return_exceptions=True)
    created = [o for o in outcomes if isinstance(o, alerts_pb2.Rule)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == 3
    assert len(refused) == 5
    assert all(r.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)


async def test_two_replicas_share_one_quota(start_alerts: StartAlerts) -> None:
    one = await start_alerts(quota_free=4)
    two = await start_alerts(quota_free=4)  # the same database, its own pool and server
    ada = one.user()
    two.tokens[ada] = one.token(ada)
    outcomes = await asyncio.gather(
        *(replica.create(ada) for replica in (one, two) * 5), return_exceptions=True
    )
    assert sum(isinstance(o, alerts_pb2.Rule) for o in outcomes) == 4
    listed = await two.stub.ListRules(alerts_pb2.ListRulesRequest(), metadata=two.auth(ada))
    assert len(listed.rules) == 4


async def test_another_users_rule_is_not_found(alerts: Alerts) -> None:
    rule = await alerts.create(alerts.user("ada"))
    eve = alerts.auth(alerts.user("eve"))
    for call in (
        alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id=rule.id), metadata=eve),
        alerts.stub.UpdateRule(
            alerts_pb2.UpdateRuleRequest(id=rule.id, spec=alerts.spec()), metadata=eve
        ),
        alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=rule.id), metadata=eve),
        alerts.stub.ResumeRule(alerts_pb2.ResumeRuleRequest(id=rule.id), metadata=eve),
        alerts.stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id=rule.id), metadata=eve),
        alerts.stub.TestRule(alerts_pb2.TestRuleRequest(id=rule.id), metadata=eve),
        alerts.stub.ListFirings(alerts_pb2.ListFiringsRequest(rule_id=rule.id), metadata=eve),
        alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id="not-a-uuid"), metadata=eve),
    ):
        assert isinstance(await failure(call), NotFound)


async def test_a_call_without_a_token_is_unauthenticated(alerts: Alerts) -> None:
    error = await failure(alerts.stub.ListRules(alerts_pb2.ListRulesRequest()))
    assert isinstance(error, Unauthenticated)


async def test_update_replaces_the_definition_and_checks_the_version(alerts: Alerts) -> None:
    ada = alerts.user()
    rule = await alerts.create(ada)
    new = alerts.spec(symbol="MSFT", condition="price_below", value=380.0, channels=["webhook"])
    updated = (
        await alerts.stub.UpdateRule(
            alerts_pb2.UpdateRuleRequest(id=rule.id, spec=new, version=1), metadata=alerts.auth(ada)
        )
    ).rule
    assert updated.spec.symbol == "MSFT"
    assert updated.spec.value == 380.0
    assert updated.version == 2
    stale = await failure(
        alerts.stub.UpdateRule(
            alerts_pb2.UpdateRuleRequest(id=rule.id, spec=new, version=1), metadata=alerts.auth(ada)
        )
    )
    assert isinstance(stale, PreconditionFailed)
    bad = await failure(
        alerts.stub.UpdateRule(
            alerts_pb2.UpdateRuleRequest(id=rule.id, spec=alerts.spec(value=-1.0)),
            metadata=alerts.auth(ada),
        )
    )
    assert isinstance(bad, ValidationFailed)
    assert await alerts.outbox() == [events.RULE_CREATED, events.RULE_UPDATED]


async def test_pause_resume_and_delete(alerts: Alerts) -> None:
    ada = alerts.user()
    rule = await alerts.create(ada)
    me = alerts.auth(ada)
    paused = (
        await alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=rule.id), metadata=me)
    ).rule
    assert paused.status == "paused"
    assert paused.version == 2
    assert (
        await alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=rule.id), metadata=me)
    ).rule.version == 2  # no change
    resumed = (
        await alerts.stub.ResumeRule(alerts_pb2.ResumeRuleRequest(id=rule.id), metadata=me)
    ).rule
    assert resumed.status == "active"
    assert resumed.version == 3
    await alerts.stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id=rule.id), metadata=me)
    assert isinstance(
        await failure(alerts.stub.GetRule(alerts_pb2.GetRuleRequest(id=rule.id), metadata=me)),
        NotFound,
    )
    assert await alerts.outbox() == [
        events.RULE_CREATED,
        events.RULE_UPDATED,
        events.RULE_UPDATED,
        events.RULE_DELETED,
    ]


async def test_rules_are_listed_newest_first_by_page_and_filter(alerts: Alerts) -> None:
    ada = alerts.user()
    me = alerts.auth(ada)
    made = [await alerts.create(ada, symbol="AAPL" if i % 2 else "MSFT") for i in range(7)]
    await alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=made[0].id), metadata=me)
    seen: list[str] = []
    cursor = ""
    while True:
        page = await alerts.stub.ListRules(
            alerts_pb2.ListRulesRequest(limit=3, cursor=cursor), metadata=me
        )
        seen += [r.id for r in page.rules]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert seen == [r.id for r in reversed(made)]
    aapl = await alerts.stub.ListRules(alerts_pb2.ListRulesRequest(symbol="aapl"), metadata=me)
    assert {r.id for r in aapl.rules} == {r.id for r in made if r.spec.symbol == "AAPL"}
    paused = await alerts.stub.ListRules(alerts_pb2.ListRulesRequest(status="paused"), metadata=me)
    assert [r.id for r in paused.rules] == [made[0].id]
    for request in (
        alerts_pb2.ListRulesRequest(status="asleep"),
        alerts_pb2.ListRulesRequest(limit=5000),
        alerts_pb2.ListRulesRequest(cursor="garbage!"),
    ):
        assert isinstance(
            await failure(alerts.stub.ListRules(request, metadata=me)), ValidationFailed
        )


async def test_rules_past_their_expiry_turn_expired(start_alerts: StartAlerts) -> None:
    alerts = await start_alerts(expiry_batch=2)
    ada = alerts.user()
    me = alerts.auth(ada)
    later = ts(datetime.now(UTC) + timedelta(hours=1))
    rules = [await alerts.create(ada, expires_at=later) for _ in range(5)]
    await alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=rules[0].id), metadata=me)
    keeps = await alerts.create(ada, expires_at=later)
    async with alerts.app.database.connection() as conn:
        await conn.execute(
            "UPDATE rules SET expires_at = now() - interval '1 second' WHERE id <> $1::uuid",
            keeps.id,
        )
    assert await alerts.app.expiry.run_once() == 5  # three batches of at most 2
    assert await alerts.app.expiry.run_once() == 0
    listed = await alerts.stub.ListRules(alerts_pb2.ListRulesRequest(status="expired"), metadata=me)
    assert {r.id for r in listed.rules} == {r.id for r in rules}
    assert all(r.version == (3 if r.id == rules[0].id else 2) for r in listed.rules)
    outbox = await alerts.outbox()
    assert outbox.count(events.RULE_UPDATED) == 1 + 5  # the pause, then one per expiry
    error = await failure(
        alerts.stub.PauseRule(alerts_pb2.PauseRuleRequest(id=rules[1].id), metadata=me)
    )
    assert isinstance(error, PreconditionFailed)
    # Updating an expired rule with a new expiry arms it again.
    again = (
        await alerts.stub.UpdateRule(
            alerts_pb2.UpdateRuleRequest(id=rules[1].id, spec=alerts.spec(expires_at=later)),
            metadata=me,
        )
    ).rule
    assert again.status == "active"
