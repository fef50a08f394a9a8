"""The mailer against the real SMTP server the devstack plugin starts (aiosmtpd writing a
Maildir): what arrives is what was sent, and an unreachable server is an outage."""

from __future__ import annotations

import asyncio
import mailbox
import time
from mailbox import MaildirMessage
from pathlib import Path

import aiosmtplib
import pytest

from aether_common import outages
from aether_common.mailer import Mailer, SmtpServer
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import unique_name


async def received(
    maildir: Path, to: str, count: int = 1, within: float = 10.0
) -> list[MaildirMessage]:
    """The mail to `to` the server stored, once `count` arrived (or `within` seconds passed)."""
    deadline = time.monotonic() + within
    while True:
        found = [m for m in mailbox.Maildir(maildir, create=False) if m["To"] == to]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_sent_mail_arrives_as_sent(aether_endpoints: Endpoints, maildir: Path) -> None:
    mailer = Mailer(
        SmtpServer(aether_endpoints.smtp_host, aether_endpoints.smtp_port),
        sender="Aether Alerts <alerts@aether.local>",
    )
    to = f"{unique_name('u')}@example.com"
    await mailer.send(to, "Price alert: AAPL", "AAPL crossed 200.00 — ünïcode stays intact.\n")

    [mail] = await received(maildir, to)
    assert mail["From"] == "Aether Alerts <alerts@aether.local>"
    assert mail["Subject"] == "Price alert: AAPL"
    assert mail["Message-ID"].endswith("@aether.local>")
    assert mail.get_content_type() == "text/plain"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert body.decode(mail.get_content_charset() or "utf-8") == (
        "AAPL crossed 200.00 — ünïcode stays intact.\n"
    )


async def test_each_send_is_its_own_message(aether_endpoints: Endpoints, maildir: Path) -> None:
    mailer = Mailer(
        SmtpServer(aether_endpoints.smtp_host, aether_endpoints.smtp_port), sender="a@aether.local"
    )
    to = f"{unique_name('u')}@example.com"
    await asyncio.gather(*(mailer.send(to, f"n{i}", "x\n") for i in range(3)))
    mails = await received(maildir, to, count=3)
    assert sorted(m["Subject"] for m in mails) == ["n0", "n1", "n2"]
    assert len({m["Message-ID"] for m in mails}) == 3


async def test_an_unreachable_server_is_an_outage() -> None:
    mailer = Mailer(SmtpServer("127.0.0.1", free_port(), timeout_s=1.0), sender="a@aether.local")
    with pytest.raises(aiosmtplib.SMTPConnectError) as raised:  # an OSError
        await mailer.send("b@example.com", "s", "b\n")
    assert outages.classify(raised.value) is outages.Failure.OUTAGE
    unavailable = outages.as_unavailable(raised.value, "alerts")
    assert unavailable is not None
    assert unavailable.retry_after == outages.RETRY_AFTER_S
