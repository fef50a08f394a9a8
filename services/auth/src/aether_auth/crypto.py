"""Secrets at rest and keyed hashes, all derived from the one configured secret.

Private signing keys and TOTP secrets are stored AES-256-GCM encrypted (a database dump alone
does not let anyone mint tokens or codes); recovery codes are stored as HMAC-SHA256 under a
derived pepper, so their ~50 bits cannot be brute-forced offline without the secret. Each use
gets its own HKDF-derived key, so one purpose's key never serves another.
"""

from __future__ import annotations

import hashlib
import secrets

from aether_common.secret_box import SecretBox, SecretBoxError

__all__ = ["SecretBox", "SecretBoxError", "new_box", "random_token", "token_hash"]


def new_box(master_secret: str) -> SecretBox:
    """auth's box (aether_common.secret_box): its own salt, and its setting named on failure."""
    return SecretBox(master_secret, salt=b"aether-auth", setting="AUTH_KEY_ENCRYPTION_SECRET")


def random_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe token (refresh tokens, mail links, OAuth state)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> bytes:
    """How high-entropy tokens are stored: SHA-256 is enough at 256 bits of randomness."""
    return hashlib.sha256(token.encode()).digest()
