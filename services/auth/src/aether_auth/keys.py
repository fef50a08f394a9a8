"""Access-token signing keys: Ed25519, stored in PostgreSQL with the private half encrypted.

The newest unretired key signs. Rotation retires it (it keeps verifying, and stays in the JWKS,
for one access-token lifetime plus leeway) and adds a new one; replicas pick the new key up on
their next reload, and a token whose `kid` they do not know yet triggers an early reload.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from aether_auth import repository
from aether_auth.crypto import SecretBox
from aether_common.logging import get_logger
from aether_common.postgres import PostgresDatabase, UnitOfWork

ALGORITHM = "EdDSA"
_PURPOSE = "signing-key"
# How long after retirement a key still verifies, beyond the access-token lifetime (clock skew).
VERIFY_LEEWAY = timedelta(minutes=5)
# An unknown kid reloads the keys at most this often (a flood of forged kids must not hammer PG).
UNKNOWN_KID_RELOAD_S = 5.0

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublicKey:
    kid: str
    key: Ed25519PublicKey
    jwk: dict[str, Any]
    retired: bool


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


def new_key_material(box: SecretBox) -> tuple[str, str, bytes]:
    """(kid, public JWK JSON, encrypted private key) for a fresh Ed25519 key."""
    private_key = Ed25519PrivateKey.generate()
    kid = f"{time.strftime('%Y%m%d', time.gmtime())}-{uuid.uuid4().hex[:12]}"
    jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk |= {"kid": kid, "alg": ALGORITHM, "use": "sig"}
    raw = private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return kid, json.dumps(jwk, sort_keys=True), box.encrypt(_PURPOSE, raw, kid.encode())


async def rotate(conn: Any, box: SecretBox, access_token_ttl: timedelta) -> str:
    """Retire the signing key and add a new one (in the caller's transaction); returns its kid."""
    await repository.lock_signing_keys(conn)
    retired = await repository.retire_signing_keys(conn, access_token_ttl + VERIFY_LEEWAY)
    kid, jwk, private_enc = new_key_material(box)
    await repository.insert_signing_key(
        conn, kid=kid, algorithm=ALGORITHM, public_jwk=jwk, private_key_enc=private_enc
    )
    log.info("signing key rotated", new_kid=kid, retired=retired)
    return kid


class KeyRing:
    """Component: the keys in memory. Makes the first key on an empty database."""

    name = "signing-keys"

    def __init__(
        self, database: PostgresDatabase, box: SecretBox, access_token_ttl: timedelta
    ) -> None:
        self._db = database
        self._box = box
        self._ttl = access_token_ttl
        self._signing: SigningKey | None = None
        self._public: dict[str, PublicKey] = {}
        self._last_unknown_reload = 0.0

    async def start(self) -> None:
        await self.ensure_signing_key()

    async def stop(self) -> None:
        pass

    async def ready(self) -> bool:
        return self._signing is not None

    async def ensure_signing_key(self) -> None:
        async def ensure(uow: UnitOfWork) -> None:
            await repository.lock_signing_keys(uow.conn)
            if await repository.active_signing_key_created(uow.conn) is None:
                await rotate(uow.conn, self._box, self._ttl)

        await self._db.transaction(ensure)
        await self.reload()

    async def rotate_if_older_than(self, interval: timedelta) -> str | None:
        """The housekeeper's scheduled rotation; one replica does it (advisory lock)."""

        async def rotate_if_due(uow: UnitOfWork) -> str | None:
            await repository.lock_signing_keys(uow.conn)
            created: datetime | None = await repository.active_signing_key_created(uow.conn)
            now = await uow.conn.fetchval("SELECT now()")
            if created is None or now - created >= interval:
                return await rotate(uow.conn, self._box, self._ttl)
            return None

        kid = await self._db.transaction(rotate_if_due)
        await self.reload()
        return kid

    async def rotate_now(self) -> str:
        kid = await self._db.transaction(lambda uow: rotate(uow.conn, self._box, self._ttl))
        await self.reload()
        return kid

    async def reload(self) -> None:
        async with self._db.connection() as conn:
            records = await repository.verifiable_signing_keys(conn)
        public: dict[str, PublicKey] = {}
        signing: SigningKey | None = None
        for record in records:
            jwk = json.loads(record.public_jwk)
            key = OKPAlgorithm.from_jwk(jwk)
            if not isinstance(key, Ed25519PublicKey):
                log.error("signing key is not Ed25519; ignored", kid=record.kid)
                continue
            public[record.kid] = PublicKey(record.kid, key, jwk, record.retired_at is not None)
            if signing is None and record.retired_at is None:
                raw = self._box.decrypt(_PURPOSE, record.private_key_enc, record.kid.encode())
                signing = SigningKey(record.kid, Ed25519PrivateKey.from_private_bytes(raw))
        if signing is None:
            raise RuntimeError("no active signing key in the database")
        self._public, self._signing = public, signing

    @property
    def signing_key(self) -> SigningKey:
        if self._signing is None:
            raise RuntimeError("signing keys not loaded")
        return self._signing

    async def verification_key(self, kid: str) -> Ed25519PublicKey | None:
        """The public key for `kid`; an unknown kid may be a replica's fresh key: reload once."""
        known = self._public.get(kid)
        if known is not None:
            return known.key
        now = time.monotonic()
        if now - self._last_unknown_reload < UNKNOWN_KID_RELOAD_S:
            return None
        self._last_unknown_reload = now
        await self.reload()
        known = self._public.get(kid)
        return known.key if known else None

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 JWK Set: the signing key first, then retired keys that still verify."""
        return {"keys": [k.jwk for k in self._public.values()]}
