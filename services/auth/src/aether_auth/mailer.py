"""Outgoing mail over SMTP (aiosmtplib): the email-verification and password-reset links."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import urlencode

import aiosmtplib

from aether_auth.config import AuthSettings
from aether_common.logging import get_logger

log = get_logger(__name__)


class Mailer:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings

    def link(self, path: str, token: str) -> str:
        return f"{self._settings.public_base_url}{path}?{urlencode({'token': token})}"

    async def send_email_verification(self, to: str, token: str) -> None:
        url = self.link(self._settings.verify_email_path, token)
        hours = self._settings.verify_email_ttl_s // 3600
        await self._send(
            to,
            "Verify your email address",
            f"Welcome to Aether.\n\nConfirm that {to} is your address by opening this link:\n\n"
            f"{url}\n\nThe link works once and expires in {hours} hours. If you did not create "
            "an account, ignore this message.\n",
        )

    async def send_password_reset(self, to: str, token: str) -> None:
        url = self.link(self._settings.reset_password_path, token)
        minutes = self._settings.reset_password_ttl_s // 60
        await self._send(
            to,
            "Reset your password",
            "Someone asked to reset the password of your Aether account. To choose a new one, "
            f"open this link:\n\n{url}\n\nThe link works once and expires in {minutes} minutes. "
            "Every signed-in device will be signed out. If it was not you, ignore this "
            "message: your password stays as it is.\n",
        )

    async def _send(self, to: str, subject: str, body: str) -> None:
        s = self._settings
        message = EmailMessage()
        message["From"] = s.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="aether.local")
        message.set_content(body)
        await aiosmtplib.send(
            message,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            start_tls=s.smtp_starttls,
            use_tls=s.smtp_tls,
            timeout=s.smtp_timeout_s,
        )
        log.info("mail sent", subject=subject)
