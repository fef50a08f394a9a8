"""The mail auth sends: the email-verification and password-reset links, their subjects and
texts. The kit's `Mailer` delivers them."""

from __future__ import annotations

from urllib.parse import urlencode

from aether_auth.config import AuthSettings
from aether_common.mailer import Mailer, SmtpServer


def smtp_server(settings: AuthSettings) -> SmtpServer:
    s = settings
    return SmtpServer(
        host=s.smtp_host,
        port=s.smtp_port,
        username=s.smtp_username,
        password=s.smtp_password,
        starttls=s.smtp_starttls,
        tls=s.smtp_tls,
        timeout_s=s.smtp_timeout_s,
    )


class AccountEmails:
    def __init__(self, mailer: Mailer, settings: AuthSettings) -> None:
        self._mailer = mailer
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> AccountEmails:
        return cls(Mailer(smtp_server(settings), sender=settings.mail_from), settings)

    def link(self, path: str, token: str) -> str:
        return f"{self._settings.public_base_url}{path}?{urlencode({'token': token})}"

    async def send_email_verification(self, to: str, token: str) -> None:
        url = self.link(self._settings.verify_email_path, token)
        hours = self._settings.verify_email_ttl_s // 3600
        await self._mailer.send(
            to,
            "Verify your email address",
            f"Welcome to Aether.\n\nConfirm that {to} is your address by opening this link:\n\n"
            f"{url}\n\nThe link works once and expires in {hours} hours. If you did not create "
            "an account, ignore this message.\n",
        )

    async def send_password_reset(self, to: str, token: str) -> None:
        url = self.link(self._settings.reset_password_path, token)
        minutes = self._settings.reset_password_ttl_s // 60
        await self._mailer.send(
            to,
            "Reset your password",
            "Someone asked to reset the password of your Aether account. To choose a new one, "
            f"open this link:\n\n{url}\n\nThe link works once and expires in {minutes} minutes. "
            "Every signed-in device will be signed out. If it was not you, ignore this "
            "message: your password stays as it is.\n",
        )
