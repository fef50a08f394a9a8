"""Input checks that turn user mistakes into ValidationFailed with one message per field."""

from __future__ import annotations

import unicodedata
import uuid

from email_validator import EmailNotValidError, validate_email

from aether_common.errors import ValidationFailed

MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME_LENGTH = 64


class FieldErrors:
    """Collects violations so one answer names every bad field, not just the first."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def add(self, field: str, problem: str) -> None:
        self.errors.setdefault(field, problem)

    def raise_if_any(self) -> None:
        if self.errors:
            summary = "; ".join(f"{field} {problem}" for field, problem in self.errors.items())
            raise ValidationFailed(f"invalid request: {summary}", field_errors=self.errors)


def normalize_email(raw: str) -> str:
    """The account key: validated syntax (no DNS lookup), lower case. Raises ValueError."""
    text = raw.strip()
    if not text:
        raise ValueError("is required")
    if len(text) > MAX_EMAIL_LENGTH:
        raise ValueError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    try:
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address ({exc})") from None
    # Mailboxes are case-insensitive in practice; one account per address whatever the case.
    return info.normalized.lower()


def email_field(errors: FieldErrors, raw: str, field: str = "email") -> str:
    try:
        return normalize_email(raw)
    except ValueError as exc:
        errors.add(field, str(exc))
        return ""


def required(errors: FieldErrors, value: str, field: str) -> str:
    if not value:
        errors.add(field, "is required")
    return value


def display_name(errors: FieldErrors, raw: str, field: str = "display_name") -> str:
    name = unicodedata.normalize("NFC", raw).strip()
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        errors.add(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    elif any(unicodedata.category(ch).startswith("C") for ch in name):
        errors.add(field, "must not contain control characters")
    return name


def user_id(raw: str, field: str = "user_id") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationFailed(
            f"{field} is not a valid user id", field_errors={field: "is not a valid user id"}
        ) from None
