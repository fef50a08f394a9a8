"""`/api/alerts/*` and `/api/notifications/*`: each route calls one AlertsService RPC with the
caller's token; alerts' errors keep their meaning (404 for a rule that is not the caller's, 400
naming a bad field or an unknown symbol, 429 naming the plan's quota of active rules, 422 for a
stale version or a rule in the wrong state). The per-plan rate limit applies as everywhere."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from aether.alerts.v1 import alerts_pb2
from aether_gateway.alerts import convert
from aether_gateway.alerts.client import AlertsClient, AlertsNotConfigured
from aether_gateway.alerts.schemas import (
    DeliveriesOut,
    DeliveryOut,
    FiringOut,
    FiringsOut,
    MarkedOut,
    NotificationOut,
    NotificationsOut,
    RuleIn,
    RuleOut,
    RulesOut,
    RuleUpdateIn,
    Status,
    Symbol,
    UnreadOut,
    WebhookIn,
    WebhookOut,
    WebhookSecretOut,
    WebhooksOut,
)
from aether_gateway.deps import Caller, resources_of

router = APIRouter(prefix="/api/alerts", tags=["alerts"])
# Included before `router`: its fixed paths (/webhooks) must win over `/{rule_id}`.
delivery = APIRouter(prefix="/api/alerts", tags=["alerts"])
inbox = APIRouter(prefix="/api/notifications", tags=["alerts"])


async def get_alerts(request: Request) -> AlertsClient:
    alerts = resources_of(request).alerts
    if alerts is None:
        raise AlertsNotConfigured()
    return alerts


Alerts = Annotated[AlertsClient, Depends(get_alerts)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str, Query(max_length=512, description="next_cursor of the previous page")]


def _rule(answer: alerts_pb2.Rule) -> RuleOut:
    return RuleOut.model_validate(convert.rule(answer))


# -- rules ---------------------------------------------------------------------------------------
@router.post("", status_code=201, summary="Create an alert rule (CreateRule)")
async def create(body: RuleIn, caller: Caller, alerts: Alerts) -> RuleOut:
    request = alerts_pb2.CreateRuleRequest(spec=convert.spec(body))
    return _rule((await alerts.call(alerts.stub.CreateRule, request, token=caller.raw)).rule)


@router.get("", summary="The caller's rules, newest first (ListRules)")
async def list_rules(
    caller: Caller,
    alerts: Alerts,
    status: Status | None = None,
    symbol: Annotated[Symbol | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = "",
) -> RulesOut:
    request = alerts_pb2.ListRulesRequest(
        status=status or "", symbol=symbol or "", limit=limit, cursor=cursor
    )
    answer = await alerts.call(alerts.stub.ListRules, request, token=caller.raw)
    return RulesOut(rules=[_rule(r) for r in answer.rules], next_cursor=answer.next_cursor or None)


@router.get("/{rule_id}", summary="One rule (GetRule)")
async def get(rule_id: str, caller: Caller, alerts: Alerts) -> RuleOut:
    request = alerts_pb2.GetRuleRequest(id=rule_id)
    return _rule((await alerts.call(alerts.stub.GetRule, request, token=caller.raw)).rule)


@router.put("/{rule_id}", summary="Replace a rule's definition (UpdateRule)")
async def update(rule_id: str, body: RuleUpdateIn, caller: Caller, alerts: Alerts) -> RuleOut:
    request = alerts_pb2.UpdateRuleRequest(
        id=rule_id, spec=convert.spec(body), version=body.version or 0
    )
    return _rule((await alerts.call(alerts.stub.UpdateRule, request, token=caller.raw)).rule)


@router.delete(
    "/{rule_id}", status_code=204, response_class=Response, summary="Delete a rule (DeleteRule)"
)
async def delete(rule_id: str, caller: Caller, alerts: Alerts) -> Response:
    request = alerts_pb2.DeleteRuleRequest(id=rule_id)
    await alerts.call(alerts.stub.DeleteRule, request, token=caller.raw)
    return Response(status_code=204)


@router.post("/{rule_id}/pause", summary="Stop evaluating a rule (PauseRule)")
async def pause(rule_id: str, caller: Caller, alerts: Alerts) -> RuleOut:
    request = alerts_pb2.PauseRuleRequest(id=rule_id)
    return _rule((await alerts.call(alerts.stub.PauseRule, request, token=caller.raw)).rule)


@router.post("/{rule_id}/resume", summary="Evaluate a paused rule again (ResumeRule)")
async def resume(rule_id: str, caller: Caller, alerts: Alerts) -> RuleOut:
    request = alerts_pb2.ResumeRuleRequest(id=rule_id)
    return _rule((await alerts.call(alerts.stub.ResumeRule, request, token=caller.raw)).rule)


@router.post(
    "/{rule_id}/test",
    status_code=201,
    summary="Fire the rule's notification path now, without a market event (TestRule)",
)
async def test(rule_id: str, caller: Caller, alerts: Alerts) -> FiringOut:
    request = alerts_pb2.TestRuleRequest(id=rule_id)
    answer = await alerts.call(alerts.stub.TestRule, request, token=caller.raw)
    return FiringOut.model_validate(convert.firing(answer.firing))


@router.get("/{rule_id}/firings", summary="A rule's firings, newest first (ListFirings)")
async def firings(
    rule_id: str, caller: Caller, alerts: Alerts, limit: Limit = 50, cursor: Cursor = ""
) -> FiringsOut:
    request = alerts_pb2.ListFiringsRequest(rule_id=rule_id, limit=limit, cursor=cursor)
    answer = await alerts.call(alerts.stub.ListFirings, request, token=caller.raw)
    return FiringsOut(
        firings=[FiringOut.model_validate(convert.firing(f)) for f in answer.firings],
        next_cursor=answer.next_cursor or None,
    )


# -- delivery ------------------------------------------------------------------------------------
@delivery.get("/firings/{firing_id}", summary="One firing with its deliveries (GetFiring)")
async def firing(firing_id: str, caller: Caller, alerts: Alerts) -> FiringOut:
    request = alerts_pb2.GetFiringRequest(id=firing_id)
    answer = await alerts.call(alerts.stub.GetFiring, request, token=caller.raw)
    return FiringOut.model_validate(convert.firing(answer.firing))


@delivery.get(
    "/deliveries",
    summary="The caller's deliveries, latest change first; status=failed: the dead ones",
)
async def deliveries(
    caller: Caller,
    alerts: Alerts,
    status: Literal["pending", "sent", "failed", "retrying"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = "",
) -> DeliveriesOut:
    request = alerts_pb2.ListDeliveriesRequest(status=status or "", limit=limit, cursor=cursor)
    answer = await alerts.call(alerts.stub.ListDeliveries, request, token=caller.raw)
    return DeliveriesOut(
        deliveries=[DeliveryOut.model_validate(convert.delivery(d)) for d in answer.deliveries],
        next_cursor=answer.next_cursor or None,
    )


@delivery.post(
    "/deliveries/{delivery_id}/replay",
    summary="Send a delivery again now, with a fresh attempt budget (ReplayDelivery)",
)
async def replay(delivery_id: str, caller: Caller, alerts: Alerts) -> DeliveryOut:
    request = alerts_pb2.ReplayDeliveryRequest(id=delivery_id)
    answer = await alerts.call(alerts.stub.ReplayDelivery, request, token=caller.raw)
    return DeliveryOut.model_validate(convert.delivery(answer.delivery))


@delivery.post(
    "/webhooks", status_code=201, summary="Add a webhook endpoint; the secret is shown once"
)
async def create_webhook(body: WebhookIn, caller: Caller, alerts: Alerts) -> WebhookSecretOut:
    request = alerts_pb2.CreateWebhookRequest(url=body.url)
    answer = await alerts.call(alerts.stub.CreateWebhook, request, token=caller.raw)
    return WebhookSecretOut.model_validate(
        convert.webhook(answer.webhook) | {"secret": answer.secret}
    )


@delivery.get("/webhooks", summary="The caller's webhook endpoints (no secrets)")
async def webhooks(caller: Caller, alerts: Alerts) -> WebhooksOut:
    request = alerts_pb2.ListWebhooksRequest()
    answer = await alerts.call(alerts.stub.ListWebhooks, request, token=caller.raw)
    return WebhooksOut(
        webhooks=[WebhookOut.model_validate(convert.webhook(w)) for w in answer.webhooks]
    )


@delivery.delete("/webhooks/{webhook_id}", status_code=204, summary="Remove a webhook endpoint")
async def delete_webhook(webhook_id: str, caller: Caller, alerts: Alerts) -> Response:
    request = alerts_pb2.DeleteWebhookRequest(id=webhook_id)
    await alerts.call(alerts.stub.DeleteWebhook, request, token=caller.raw)
    return Response(status_code=204)


@delivery.post(
    "/webhooks/{webhook_id}/rotate",
    summary="A new secret (shown once); the old one signs too for the grace period",
)
async def rotate_webhook(webhook_id: str, caller: Caller, alerts: Alerts) -> WebhookSecretOut:
    request = alerts_pb2.RotateWebhookSecretRequest(id=webhook_id)
    answer = await alerts.call(alerts.stub.RotateWebhookSecret, request, token=caller.raw)
    return WebhookSecretOut.model_validate(
        convert.webhook(answer.webhook) | {"secret": answer.secret}
    )


# -- the inbox -----------------------------------------------------------------------------------
@inbox.get("", summary="The caller's notifications (ListNotifications)")
async def notifications(
    caller: Caller,
    alerts: Alerts,
    order: Annotated[
        Literal["newest", "unread_first"], Query(description="newest first, or unread first")
    ] = "newest",
    unread: Annotated[bool, Query(description="only the unread ones")] = False,
    limit: Limit = 50,
    cursor: Cursor = "",
) -> NotificationsOut:
    request = alerts_pb2.ListNotificationsRequest(
        unread_first=order == "unread_first", unread_only=unread, limit=limit, cursor=cursor
    )
    answer = await alerts.call(alerts.stub.ListNotifications, request, token=caller.raw)
    return NotificationsOut(
        notifications=[
            NotificationOut.model_validate(convert.notification(n)) for n in answer.notifications
        ],
        next_cursor=answer.next_cursor or None,
    )


# Fixed paths before `/{notification_id}/read`.
@inbox.get("/unread-count", summary="How many notifications are unread (UnreadCount)")
async def unread_count(caller: Caller, alerts: Alerts) -> UnreadOut:
    request = alerts_pb2.UnreadCountRequest()
    answer = await alerts.call(alerts.stub.UnreadCount, request, token=caller.raw)
    return UnreadOut(unread=answer.unread)


@inbox.post("/read-all", summary="Mark every notification read (MarkAllRead)")
async def read_all(caller: Caller, alerts: Alerts) -> MarkedOut:
    request = alerts_pb2.MarkAllReadRequest()
    answer = await alerts.call(alerts.stub.MarkAllRead, request, token=caller.raw)
    return MarkedOut(marked=answer.marked)


@inbox.post("/{notification_id}/read", summary="Mark one notification read (MarkRead)")
async def read(notification_id: str, caller: Caller, alerts: Alerts) -> NotificationOut:
    request = alerts_pb2.MarkReadRequest(id=notification_id)
    answer = await alerts.call(alerts.stub.MarkRead, request, token=caller.raw)
    return NotificationOut.model_validate(convert.notification(answer.notification))
