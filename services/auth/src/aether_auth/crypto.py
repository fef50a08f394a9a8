"""Secrets at rest and keyed hashes, all derived from the one configured secret.

Private signing keys and TOTP secrets are stored AES-256-GCM encrypted (a database dump alone
does not let anyone mint tokens or codes); recovery codes are stored as HMAC-SHA256 under a
derived pepper, so their ~50 bits cannot be brute-forced offline without the secret. Each use
gets its own HKDF-derived key, so one purpose's key never serves another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"  # leading byte of every ciphertext, so the scheme can change later
_NONCE_BYTES = 12


class SecretBoxError(RuntimeError):
    """A stored secret could not be decrypted (wrong AUTH_KEY_ENCRYPTION_SECRET or corruption)."""


class SecretBox:
    """Encrypts small secrets under purpose-specific keys derived from one master secret."""

    def __init__(self, master_secret: str) -> None:
        if not master_secret:
            raise ValueError("the key encryption secret must not be empty")
        self._master = master_secret.encode()
        self._keys: dict[str, bytes] = {}

    def _key(self, purpose: str) -> bytes:
        key = self._keys.get(purpose)
        if key is None:
            key = self._keys[purpose] = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=b"aether-auth",
                info=purpose.encode(),
            ).derive(self._master)
        return key

    def encrypt(self, purpose: str, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._key(purpose)).encrypt(nonce, plaintext, associated)
        return _VERSION + nonce + sealed

    def decrypt(self, purpose: str, blob: bytes, associated: bytes = b"") -> bytes:
        if blob[:1] != _VERSION:
            raise SecretBoxError("unknown ciphertext version")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return AESGCM(self._key(purpose)).decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise SecretBoxError(
                f"cannot decrypt a stored {purpose} secret: wrong AUTH_KEY_ENCRYPTION_SECRET?"
            ) from None

    def keyed_hash(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key(purpose), value.encode(), hashlib.sha256).digest()


def random_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe token (refresh tokens, mail links, OAuth state)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> bytes:
    """How high-entropy tokens are stored: SHA-256 is enough at 256 bits of randomness."""
    return hashlib.sha256(token.encode()).digest()
