"""The AlertsService gRPC servicer: identify the caller, open the unit of work (writes) or take a
pooled connection (reads), call the service, answer. Rule definitions are validated and their
symbol checked with charts before the transaction opens (no network call holds a connection).
A datastore away answers UNAVAILABLE, never INTERNAL. A service in ALERTS_DELEGATING_SERVICES
(the worker) may act for a user (aether_common.delegation): the call is then that user's.
"""

from __future__ import annotations

from typing import Any

from aether.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from aether_alerts import schemas
from aether_alerts.service import AlertsService
from aether_common.data_export import encode
from aether_common.grpc.interceptors import Context
from aether_common.postgres import PostgresDatabase

SERVICE_NAME = alerts_pb2.DESCRIPTOR.services_by_name["AlertsService"].full_name


def register(servicer: AlertsServicer, server: Any) -> None:
    alerts_pb2_grpc.add_AlertsServiceServicer_to_server(servicer, server)


class AlertsServicer(alerts_pb2_grpc.AlertsServiceServicer):
    def __init__(self, service: AlertsService, database: PostgresDatabase) -> None:
        self._service = service
        self._db = database

    # -- rules -----------------------------------------------------------------------------------
    async def CreateRule(
        self, request: alerts_pb2.CreateRuleRequest, context: Context
    ) -> alerts_pb2.CreateRuleResponse:
        caller = self._service.caller()
        spec = await self._service.checked(schemas.spec(request.spec))
        rule = await self._db.transaction(lambda uow: self._service.create(uow, caller, spec))
        return alerts_pb2.CreateRuleResponse(rule=schemas.rule_pb(rule))

    async def ListRules(
        self, request: alerts_pb2.ListRulesRequest, context: Context
    ) -> alerts_pb2.ListRulesResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            page = await self._service.list_rules(
                conn,
                caller,
                status=request.status,
                symbol=request.symbol,
                limit=request.limit,
                cursor=request.cursor,
            )
        return alerts_pb2.ListRulesResponse(
            rules=[schemas.rule_pb(r) for r in page.items], next_cursor=page.next_cursor
        )

    async def GetRule(
        self, request: alerts_pb2.GetRuleRequest, context: Context
    ) -> alerts_pb2.GetRuleResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            rule = await self._service.get(conn, caller, request.id)
        return alerts_pb2.GetRuleResponse(rule=schemas.rule_pb(rule))

    async def UpdateRule(
        self, request: alerts_pb2.UpdateRuleRequest, context: Context
    ) -> alerts_pb2.UpdateRuleResponse:
        caller = self._service.caller()
        spec = await self._service.checked(schemas.spec(request.spec))
        rule = await self._db.transaction(
            lambda uow: self._service.update(uow, caller, request.id, spec, request.version)
        )
        return alerts_pb2.UpdateRuleResponse(rule=schemas.rule_pb(rule))

    async def PauseRule(
        self, request: alerts_pb2.PauseRuleRequest, context: Context
    ) -> alerts_pb2.PauseRuleResponse:
        caller = self._service.caller()
        rule = await self._db.transaction(lambda uow: self._service.pause(uow, caller, request.id))
        return alerts_pb2.PauseRuleResponse(rule=schemas.rule_pb(rule))

    async def ResumeRule(
        self, request: alerts_pb2.ResumeRuleRequest, context: Context
    ) -> alerts_pb2.ResumeRuleResponse:
        caller = self._service.caller()
        rule = await self._db.transaction(lambda uow: self._service.resume(uow, caller, request.id))
        return alerts_pb2.ResumeRuleResponse(rule=schemas.rule_pb(rule))

    async def DeleteRule(
        self, request: alerts_pb2.DeleteRuleRequest, context: Context
    ) -> alerts_pb2.DeleteRuleResponse:
        caller = self._service.caller()
        await self._db.transaction(lambda uow: self._service.delete(uow, caller, request.id))
        return alerts_pb2.DeleteRuleResponse()

    async def TestRule(
        self, request: alerts_pb2.TestRuleRequest, context: Context
    ) -> alerts_pb2.TestRuleResponse:
        caller = self._service.caller()
        firing = await self._db.transaction(lambda uow: self._service.test(uow, caller, request.id))
        return alerts_pb2.TestRuleResponse(firing=schemas.firing_pb(firing))

    async def ListFirings(
        self, request: alerts_pb2.ListFiringsRequest, context: Context
    ) -> alerts_pb2.ListFiringsResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            page = await self._service.firings(
                conn, caller, request.rule_id, limit=request.limit, cursor=request.cursor
            )
            deliveries = await self._service.deliveries(conn, page.items)
        return alerts_pb2.ListFiringsResponse(
            firings=[schemas.firing_pb(f, deliveries[f.id]) for f in page.items],
            next_cursor=page.next_cursor,
        )

    # -- the inbox -------------------------------------------------------------------------------
    async def ListNotifications(
        self, request: alerts_pb2.ListNotificationsRequest, context: Context
    ) -> alerts_pb2.ListNotificationsResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            page = await self._service.notifications(
                conn,
                caller,
                unread_first=request.unread_first,
                unread_only=request.unread_only,
                limit=request.limit,
                cursor=request.cursor,
            )
        return alerts_pb2.ListNotificationsResponse(
            notifications=[schemas.notification_pb(n) for n in page.items],
            next_cursor=page.next_cursor,
        )

    async def MarkRead(
        self, request: alerts_pb2.MarkReadRequest, context: Context
    ) -> alerts_pb2.MarkReadResponse:
        caller = self._service.caller()
        # One statement: it commits or rolls back as a whole.
        async with self._db.connection() as conn:
            note = await self._service.mark_read(conn, caller, request.id)
        return alerts_pb2.MarkReadResponse(notification=schemas.notification_pb(note))

    async def MarkAllRead(
        self, request: alerts_pb2.MarkAllReadRequest, context: Context
    ) -> alerts_pb2.MarkAllReadResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            marked = await self._service.mark_all_read(conn, caller)
        return alerts_pb2.MarkAllReadResponse(marked=marked)

    async def UnreadCount(
        self, request: alerts_pb2.UnreadCountRequest, context: Context
    ) -> alerts_pb2.UnreadCountResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            unread = await self._service.unread_count(conn, caller)
        return alerts_pb2.UnreadCountResponse(unread=unread)

    # -- the GDPR export -------------------------------------------------------------------------
    async def ExportMyData(
        self, request: alerts_pb2.ExportMyDataRequest, context: Context
    ) -> alerts_pb2.ExportMyDataResponse:
        caller = self._service.caller()
        document = await self._db.transaction(lambda uow: self._service.export_my_data(uow, caller))
        return alerts_pb2.ExportMyDataResponse(
            json=encode(document, max_bytes=self._service.export_max_bytes)
        )

    # -- delivery --------------------------------------------------------------------------------
    async def GetFiring(
        self, request: alerts_pb2.GetFiringRequest, context: Context
    ) -> alerts_pb2.GetFiringResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            firing = await self._service.firing(conn, caller, request.id)
            deliveries = await self._service.deliveries(conn, [firing])
        return alerts_pb2.GetFiringResponse(firing=schemas.firing_pb(firing, deliveries[firing.id]))

    async def ListDeliveries(
        self, request: alerts_pb2.ListDeliveriesRequest, context: Context
    ) -> alerts_pb2.ListDeliveriesResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            page = await self._service.list_deliveries(
                conn, caller, status=request.status, limit=request.limit, cursor=request.cursor
            )
        return alerts_pb2.ListDeliveriesResponse(
            deliveries=[schemas.delivery_pb(d) for d in page.items], next_cursor=page.next_cursor
        )

    async def ReplayDelivery(
        self, request: alerts_pb2.ReplayDeliveryRequest, context: Context
    ) -> alerts_pb2.ReplayDeliveryResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:  # one statement
            delivery = await self._service.replay(conn, caller, request.id)
        return alerts_pb2.ReplayDeliveryResponse(delivery=schemas.delivery_pb(delivery))

    # -- webhook endpoints -----------------------------------------------------------------------
    async def CreateWebhook(
        self, request: alerts_pb2.CreateWebhookRequest, context: Context
    ) -> alerts_pb2.CreateWebhookResponse:
        caller = self._service.caller()
        hook, secret = await self._db.transaction(
            lambda uow: self._service.create_webhook(uow, caller, request.url)
        )
        return alerts_pb2.CreateWebhookResponse(webhook=schemas.webhook_pb(hook), secret=secret)

    async def ListWebhooks(
        self, request: alerts_pb2.ListWebhooksRequest, context: Context
    ) -> alerts_pb2.ListWebhooksResponse:
        caller = self._service.caller()
        async with self._db.connection() as conn:
            hooks = await self._service.webhooks(conn, caller)
        return alerts_pb2.ListWebhooksResponse(webhooks=[schemas.webhook_pb(h) for h in hooks])

    async def DeleteWebhook(
        self, request: alerts_pb2.DeleteWebhookRequest, context: Context
    ) -> alerts_pb2.DeleteWebhookResponse:
        caller = self._service.caller()
        await self._db.transaction(
            lambda uow: self._service.delete_webhook(uow, caller, request.id)
        )
        return alerts_pb2.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: alerts_pb2.RotateWebhookSecretRequest, context: Context
    ) -> alerts_pb2.RotateWebhookSecretResponse:
        caller = self._service.caller()
        hook, secret = await self._db.transaction(
            lambda uow: self._service.rotate_webhook(uow, caller, request.id)
        )
        return alerts_pb2.RotateWebhookSecretResponse(
            webhook=schemas.webhook_pb(hook), secret=secret
        )
