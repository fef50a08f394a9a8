"""Outgoing mail over SMTP (aiosmtplib): one plain-text message per call, from one sender.

    mailer = Mailer(SmtpServer(host, port), sender="Aether <no-reply@aether.local>")
    await mailer.send("ann@example.com", "Subject", "Body\\n")

Texts, subjects and links belong to the service that sends them (auth's `emails.py`); this
module only delivers. A connection per message: services mail rarely (a sign-up, an alert), so
a pooled connection would only be one more thing to keep alive. An unreachable server, a refused
connection or a timeout raises an `OSError` subclass, which `outages.network` calls an outage;
a refusal by the server (a bad recipient) is an `aiosmtplib.SMTPResponseException`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
from pydantic import SecretStr

from aether_common.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where mail goes and how to log in. `tls`: TLS from the first byte (port 465);
    `starttls`: upgrade a plain connection (port 587)."""

    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    tls: bool = False
    timeout_s: float = 10.0


class Mailer:
    def __init__(
        self, server: SmtpServer, *, sender: str, message_id_domain: str = "aether.local"
    ) -> None:
        self.server = server
        self.sender = sender
        self._message_id_domain = message_id_domain

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self._message_id_domain)
        message.set_content(body)
        s = self.server
        await aiosmtplib.send(
            message,
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            start_tls=s.starttls,
            use_tls=s.tls,
            timeout=s.timeout_s,
        )
        log.info("mail sent", subject=subject)
