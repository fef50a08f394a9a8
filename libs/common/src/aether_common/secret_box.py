"""Small secrets at rest: AES-256-GCM under purpose-specific keys derived (HKDF-SHA256) from one
configured master secret, so one purpose's key never serves another. A ciphertext is a version
byte, a 12-byte nonce and the sealed bytes; `associated` data binds it to its row (a ciphertext
moved to another row does not decrypt).

    box = SecretBox(settings.key_encryption_secret.get_secret_value(), salt=b"aether-auth",
                    setting="AUTH_KEY_ENCRYPTION_SECRET")
    blob = box.encrypt("totp", secret, associated=user_id.encode())
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"  # leading byte of every ciphertext, so the scheme can change later
_NONCE_BYTES = 12


class SecretBoxError(RuntimeError):
    """A stored secret could not be decrypted (a changed master secret, or corruption)."""


class SecretBox:
    """`salt`: the service's own (keys differ between services sharing a master secret);
    `setting`: the master secret's setting name, for the message when decryption fails."""

    def __init__(self, master_secret: str, *, salt: bytes, setting: str) -> None:
        if not master_secret:
            raise ValueError(f"{setting} must not be empty")
        self._master = master_secret.encode()
        self._salt = salt
        self._setting = setting
        self._keys: dict[str, bytes] = {}

    def _key(self, purpose: str) -> bytes:
        key = self._keys.get(purpose)
        if key is None:
            key = self._keys[purpose] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=self._salt, info=purpose.encode()
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
                f"cannot decrypt a stored {purpose} secret: wrong {self._setting}?"
            ) from None

    def keyed_hash(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key(purpose), value.encode(), hashlib.sha256).digest()
