"""TOTP (RFC 6238) and recovery codes: secrets, the otpauth URI and its QR code, matching.

A TOTP code is accepted in the current 30-second step or one step either side (clock drift),
and never twice: the caller stores the step that matched and passes it back as
`last_used_step`, so a code seen over a shoulder cannot be replayed.
"""

from __future__ import annotations

import hmac
import io
import re
import secrets
import time

import pyotp
import segno

TOTP_DIGITS = 6
RECOVERY_CODE_COUNT = 10
# No 0/o, 1/l/i: codes are typed from paper.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_HALF = 5
_TOTP_CODE = re.compile(r"\d{6}")


def new_totp_secret() -> str:
    return pyotp.random_base32(length=32)  # 160 bits, RFC 4226's recommendation


def otpauth_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_png(uri: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="png", scale=5, border=4)
    return buffer.getvalue()


def match_totp(
    secret: str, code: str, *, last_used_step: int, now: float | None = None
) -> int | None:
    """The step `code` belongs to, if it is valid and newer than `last_used_step`; else None."""
    code = re.sub(r"\s", "", code)
    if not _TOTP_CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS)
    current = totp.timecode(time.time() if now is None else now)
    for step in (current, current - 1, current + 1):
        if step > last_used_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def current_totp(secret: str, *, now: float | None = None) -> str:
    """The code an authenticator app shows now (tests, and the CLI's self-check)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS).at(time.time() if now is None else now)


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    def half() -> str:
        return "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_HALF))

    return [f"{half()}-{half()}" for _ in range(count)]


def normalize_recovery_code(code: str) -> str:
    """What is hashed: case, dashes and spaces do not matter when typing it back."""
    return re.sub(r"[\s-]", "", code).lower()
