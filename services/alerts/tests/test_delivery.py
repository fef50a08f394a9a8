"""Delivery against the real devstack: Kafka (the triggered event and auth's account events),
PostgreSQL (delivery rows), Redis (the in-app frame), the local SMTP server (its Maildir) and a
webhook receiver on a real socket in this test that fails the first attempts."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

from aether.alerts.v1 import alerts_pb2, events_pb2
from aether.auth.v1 import events_pb2 as auth_events
from aether.events.v1.envelope_pb2 import EventEnvelope
from aether_alerts import consumers, events, repository, webhook_send
from aether_alerts.delivery import record_deliveries
from aether_common.events import Event, EventProducer, event_from_record
from aether_common.events.envelope import decode_event
from aether_devstack.testkit import (
    WebhookReceiver,
    await_mail,
    eventually,
    read_topic,
    webhook_receiver,
)

if TYPE_CHECKING:
    from .conftest import Alerts, StartAlerts

FAST = {"delivery_backoff_s": 0.05, "delivery_max_backoff_s": 0.2, "delivery_poll_s": 0.1}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as r:
        yield r


async def publish(alerts: Alerts, *evs: Event[Any]) -> None:
    producer = EventProducer(alerts.app.settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        for event in evs:
            await producer.publish(event)
    finally:
        await producer.stop()


async def registered(alerts: Alerts, prefix: str, user_id: str, email: str) -> Event[Any]:
    return Event(
        type=prefix + consumers.USER_REGISTERED,
        subject=user_id,
        payload=auth_events.UserRegistered(user_id=user_id, email=email),
        source="auth",
    )


async def messages(pubsub: Any, *, within: float) -> list[bytes]:
    """The messages (not the subscribe confirmations) that arrive within `within` seconds."""
    found: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + within
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            found.append(message["data"])
    return found


async def deliveries(alerts: Alerts, firing_id: str) -> dict[str, repository.Delivery]:
    async with alerts.app.database.connection() as conn:
        found = await repository.deliveries_of(conn, [firing_id])
    return {d.channel.split(":")[0]: d for d in found[firing_id]}


async def settled(alerts: Alerts, firing_id: str, count: int) -> dict[str, repository.Delivery]:
    async def done() -> bool:
        rows = await deliveries(alerts, firing_id)
        return len(rows) == count and all(d.status in ("sent", "failed") for d in rows.values())

    await eventually(done, within=40, what="deliveries settled")
    return await deliveries(alerts, firing_id)


async def test_a_firing_reaches_every_channel_once(
    start_alerts: StartAlerts,
    topic_prefix: str,
    redis_prefix: str,
    maildir: Path,
    receiver: WebhookReceiver,
) -> None:
    alerts = await start_alerts(
        events=True, topic_prefix=topic_prefix, notify_prefix=redis_prefix, **FAST
    )
    ada = alerts.user("ada")
    email = f"{ada}@example.com"
    await publish(alerts, await registered(alerts, topic_prefix, ada, email))

    async def has_contact() -> bool:
        async with alerts.app.database.connection() as conn:
            return await repository.contact_email(conn, ada) == email

    await eventually(has_contact, within=30, what="ada's address from user.registered")

    receiver.fail_first = 2  # two 500s, then 200: retried with backoff
    hook = await alerts.stub.CreateWebhook(
        alerts_pb2.CreateWebhookRequest(url=receiver.url), metadata=alerts.auth(ada)
    )
    assert hook.secret.startswith("whsec_")
    listed = await alerts.stub.ListWebhooks(
        alerts_pb2.ListWebhooksRequest(), metadata=alerts.auth(ada)
    )
    assert [w.id for w in listed.webhooks] == [hook.webhook.id]
    assert hook.secret not in str(listed)

    redis = Redis.from_url(alerts.app.settings.redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{redis_prefix}user:{ada}")
    try:
        rule = await alerts.create(ada, channels=["in_app", "email", "webhook"])
        tested = await alerts.stub.TestRule(
            alerts_pb2.TestRuleRequest(id=rule.id), metadata=alerts.auth(ada)
        )
        firing_id = tested.firing.id
        rows = await settled(alerts, firing_id, 3)
        assert {k: (d.status, d.attempts) for k, d in rows.items()} == {
            "in_app": ("sent", 1),
            "email": ("sent", 1),
            "webhook": ("sent", 3),
        }
        assert rows["webhook"].last_error == ""
        assert rows["webhook"].sent_at is not None

        # In-app: the exact frame on the user's Redis channel.
        frames = await messages(pubsub, within=5)
        assert len(frames) == 1
        frame = json.loads(frames[0])
        assert list(frame) == [
            "type", "id", "firing_id", "rule_id", "symbol", "condition", "title", "body",
            "price", "market_time", "fired_at", "test",
        ]  # fmt: skip
        assert frame["type"] == "notification"
        assert frame["firing_id"] == firing_id
        assert frame["symbol"] == "AAPL"
        assert frame["test"] is True
        assert frame["fired_at"].endswith("Z")

        # Email: in the local Maildir.
        mail = await await_mail(maildir, email, "[test] Aether alert: AAPL price_above at 0")
        assert "/notifications" in mail.get_payload()

        # Webhook: three attempts of one delivery; the signature verifies with the secret.
        assert len(receiver.requests) == 3
        headers, body = receiver.requests[-1]
        assert webhook_send.verify(headers["x-aether-signature"], body, hook.secret)
        assert not webhook_send.verify(headers["x-aether-signature"], body, "whsec_other")
        assert {h["x-aether-delivery"] for h, _ in receiver.requests} == {rows["webhook"].id}
        assert json.loads(body)["firing_id"] == firing_id
        assert headers["host"] == f"127.0.0.1:{receiver.port}"

        # The API shows the deliveries, on the firing and in the rule's firings.
        got = await alerts.stub.GetFiring(
            alerts_pb2.GetFiringRequest(id=firing_id), metadata=alerts.auth(ada)
        )
        assert sorted(d.status for d in got.firing.deliveries) == ["sent"] * 3
        page = await alerts.stub.ListFirings(
            alerts_pb2.ListFiringsRequest(rule_id=rule.id), metadata=alerts.auth(ada)
        )
        assert len(page.firings[0].deliveries) == 3

        # The triggered event delivered again (same event id, and a new one): nothing more.
        bootstrap = alerts.app.settings.kafka_bootstrap
        (record,) = await read_topic(bootstrap, topic_prefix + events.TRIGGERED, 1)
        again = event_from_record(record.headers, record.value, events_pb2.AlertTriggered)
        copy = events.triggered(again.payload, topic_prefix)
        await publish(alerts, again, copy)

        async def handled() -> bool:  # the copy (a new event id) went through the handler
            async with alerts.app.database.connection() as conn:
                found = await conn.fetchval(
                    "SELECT count(*) FROM processed_events WHERE event_id = $1", copy.id
                )
            return bool(found)

        await eventually(handled, within=30, what="the copy handled")
        await asyncio.sleep(0.5)  # a dispatcher round, had anything become due
        rows2 = await deliveries(alerts, firing_id)
        assert {k: d.attempts for k, d in rows2.items()} == {"in_app": 1, "email": 1, "webhook": 3}
        assert len(receiver.requests) == 3
        assert await messages(pubsub, within=0.5) == []
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def test_no_address_or_endpoint_fails_visibly(start_alerts: StartAlerts) -> None:
    alerts = await start_alerts(**FAST, delivery_max_attempts=3)
    bob = alerts.user("bob")
    rule = await alerts.create(bob, channels=["email", "webhook"])
    firing = await fire_test(alerts, bob, rule.id)
    rows = await settled(alerts, firing, 2)
    # No address is retried (the registration event may be late), no endpoint is final.
    assert {k: (d.status, d.attempts, d.last_error) for k, d in rows.items()} == {
        "email": ("failed", 3, "no_address"),
        "webhook": ("failed", 1, "no_endpoint"),
    }


async def fire_test(alerts: Alerts, user: str, rule_id: str) -> str:
    """A test firing's id, with its delivery rows recorded as the consumer would (no Kafka)."""
    tested = await alerts.stub.TestRule(
        alerts_pb2.TestRuleRequest(id=rule_id), metadata=alerts.auth(user)
    )
    async with alerts.app.database.connection() as conn:
        envelope = await conn.fetchval(
            "SELECT envelope FROM event_outbox WHERE topic = $1 ORDER BY seq DESC LIMIT 1",
            events.TRIGGERED,
        )
    payload = decode_event(EventEnvelope.FromString(envelope), events_pb2.AlertTriggered).payload
    await alerts.app.database.transaction(lambda uow: record_deliveries(uow.conn, payload))
    alerts.app.dispatcher.wake()
    return tested.firing.id


async def test_retries_end_in_failed_and_replay_sends(
    start_alerts: StartAlerts, receiver: WebhookReceiver
) -> None:
    alerts = await start_alerts(delivery_max_attempts=2, **FAST)
    cy = alerts.user("cy")
    receiver.fail_first = 2
    await alerts.stub.CreateWebhook(
        alerts_pb2.CreateWebhookRequest(url=receiver.url), metadata=alerts.auth(cy)
    )
    rule = await alerts.create(cy, channels=["webhook"])
    firing = await fire_test(alerts, cy, rule.id)
    rows = await settled(alerts, firing, 1)
    assert (rows["webhook"].status, rows["webhook"].attempts) == ("failed", 2)
    assert rows["webhook"].last_error == "http 500"
    dead = await alerts.stub.ListDeliveries(
        alerts_pb2.ListDeliveriesRequest(status="failed"), metadata=alerts.auth(cy)
    )
    assert [d.id for d in dead.deliveries] == [rows["webhook"].id]

    replayed = await alerts.stub.ReplayDelivery(
        alerts_pb2.ReplayDeliveryRequest(id=rows["webhook"].id), metadata=alerts.auth(cy)
    )
    assert replayed.delivery.status == "pending"
    rows = await settled(alerts, firing, 1)
    assert rows["webhook"].status == "sent"
    assert len(receiver.requests) == 3
    dead = await alerts.stub.ListDeliveries(
        alerts_pb2.ListDeliveriesRequest(status="failed"), metadata=alerts.auth(cy)
    )
    assert list(dead.deliveries) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alerts.stub.ReplayDelivery(
            alerts_pb2.ReplayDeliveryRequest(id=rows["webhook"].id),
            metadata=alerts.auth(alerts.user("other")),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_outside_dev_internal_addresses_are_refused(
    start_alerts: StartAlerts, receiver: WebhookReceiver
) -> None:
    alerts = await start_alerts(
        environment="test", webhook_secret_key="a-real-key-for-this-test-0123456789", **FAST
    )
    dee = alerts.user("dee")
    for url in (
        receiver.url,
        "http://localhost/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alerts.stub.CreateWebhook(
                alerts_pb2.CreateWebhookRequest(url=url), metadata=alerts.auth(dee)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url

    # A name resolving to loopback, stored without the create check (as if its DNS changed
    # after): the send resolves it, checks every address and refuses.
    hostname = "localhost"
    box = webhook_send.SecretBox("a-real-key-for-this-test-0123456789")
    async with alerts.app.database.connection() as conn:
        hook_id = "00000000-0000-4000-8000-000000000001"
        await repository.insert_webhook(
            conn, hook_id, dee, f"http://{hostname}:{receiver.port}/", box.seal("s", hook_id)
        )
    rule = await alerts.create(dee, channels=["webhook"])
    firing = await fire_test(alerts, dee, rule.id)
    rows = await settled(alerts, firing, 1)
    assert rows["webhook"].status == "failed"
    assert rows["webhook"].attempts == 1
    assert "resolves to a non-public address" in rows["webhook"].last_error
    assert receiver.requests == []


def test_address_rules() -> None:
    for bad in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254",
                "::1", "fe80::1", "fc00::1", "224.0.0.1", "0.0.0.0", "::ffff:127.0.0.1",
                "100.64.0.1"):  # fmt: skip
        assert webhook_send.address_refused(bad), bad
    for good in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert not webhook_send.address_refused(good), good


async def test_webhook_quota_rotation_and_delete(
    start_alerts: StartAlerts, receiver: WebhookReceiver
) -> None:
    alerts = await start_alerts(webhooks_free=2, **FAST)
    eve = alerts.user("eve")
    meta = alerts.auth(eve)
    first = await alerts.stub.CreateWebhook(
        alerts_pb2.CreateWebhookRequest(url=receiver.url), metadata=meta
    )
    await alerts.stub.CreateWebhook(
        alerts_pb2.CreateWebhookRequest(url="https://example.com/hook"), metadata=meta
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alerts.stub.CreateWebhook(
            alerts_pb2.CreateWebhookRequest(url="https://example.org/hook"), metadata=meta
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    rotated = await alerts.stub.RotateWebhookSecret(
        alerts_pb2.RotateWebhookSecretRequest(id=first.webhook.id), metadata=meta
    )
    assert rotated.secret != first.secret
    assert rotated.webhook.HasField("previous_secret_until")
    rule = await alerts.create(eve, channels=["webhook"])
    firing = await fire_test(alerts, eve, rule.id)

    async def received() -> bool:
        return len(receiver.requests) == 1

    await eventually(received, within=20, what="the webhook request")
    headers, body = receiver.requests[0]
    # Both secrets sign during the grace period: receivers switch over without a gap.
    assert webhook_send.verify(headers["x-aether-signature"], body, rotated.secret)
    assert webhook_send.verify(headers["x-aether-signature"], body, first.secret)
    assert firing

    await alerts.stub.DeleteWebhook(
        alerts_pb2.DeleteWebhookRequest(id=first.webhook.id), metadata=meta
    )
    listed = await alerts.stub.ListWebhooks(alerts_pb2.ListWebhooksRequest(), metadata=meta)
    assert [w.url for w in listed.webhooks] == ["https://example.com/hook"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alerts.stub.DeleteWebhook(
            alerts_pb2.DeleteWebhookRequest(id=first.webhook.id), metadata=meta
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_signature_rejects_old_timestamps() -> None:
    header = webhook_send.signature(["whsec_x"], b"{}", now=1_000_000)
    assert not webhook_send.verify(header, b"{}", "whsec_x")


async def test_account_events_keep_and_erase_the_address(
    start_alerts: StartAlerts, topic_prefix: str, receiver: WebhookReceiver
) -> None:
    alerts = await start_alerts(events=True, topic_prefix=topic_prefix, **FAST)
    fay = alerts.user("fay")
    await alerts.stub.CreateWebhook(
        alerts_pb2.CreateWebhookRequest(url=receiver.url), metadata=alerts.auth(fay)
    )
    verified = Event(
        type=topic_prefix + consumers.EMAIL_VERIFIED,
        subject=fay,
        payload=auth_events.UserEmailVerified(user_id=fay, email="fay@new.example"),
        source="auth",
    )
    await publish(alerts, await registered(alerts, topic_prefix, fay, "fay@old.example"), verified)

    async def address() -> str | None:
        async with alerts.app.database.connection() as conn:
            return await repository.contact_email(conn, fay)

    async def verified_address() -> bool:
        return await address() == "fay@new.example"

    await eventually(verified_address, within=30, what="the verified address kept")
    deleted = Event(
        type=topic_prefix + consumers.USER_DELETED,
        subject=fay,
        payload=auth_events.UserDeleted(user_id=fay),
        source="auth",
    )
    await publish(alerts, deleted)

    async def erased() -> bool:
        async with alerts.app.database.connection() as conn:
            hooks = await repository.count_webhooks(conn, fay)
        return hooks == 0 and await address() is None

    await eventually(erased, within=30, what="fay's address and webhooks erased")


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_is_pinned_to_the_address_and_verifies_the_name(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    cert, key = self_signed(tmp_path, "localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        # "localhost" may resolve to ::1 first (nothing listens there): the next checked
        # address is tried; the request names the host, TLS checks the name's certificate.
        answer = await webhook_send.post(
            f"https://localhost:{port}/hook",
            b"{}",
            {"X-Aether-Delivery": "d-1"},
            allow_internal=True,
            connect_timeout_s=2,
            timeout_s=5,
            trust=trust,
        )
        assert answer.status == 200
        assert names == ["localhost"]
        ((headers, body),) = receiver.requests
        assert headers["host"] == f"localhost:{port}"
        assert body == b"{}"
        # The name is what TLS verifies: the same server is refused under another name.
        with pytest.raises(ssl.SSLCertVerificationError):
            await webhook_send.post(
                f"https://127.0.0.1:{port}/hook",
                b"{}",
                {},
                allow_internal=True,
                connect_timeout_s=2,
                timeout_s=5,
                trust=trust,
            )
    finally:
        server.close()
