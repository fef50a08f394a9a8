"""Password hashing (argon2id, off the event loop) and the password policy.

Hashing takes tens of milliseconds of CPU on purpose; it runs in a dedicated thread pool
(argon2 releases the GIL) so the event loop keeps serving other calls meanwhile. A login with
an unknown email still pays for one verification, so response time does not reveal accounts.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from aether_auth.metrics import PASSWORD_HASH_SECONDS

MAX_PASSWORD_LENGTH = 128  # bounds hashing work; long passphrases still fit
MIN_DISTINCT_CHARACTERS = 5

# The most used passwords of public breach corpora that pass a length check; a real deployment
# can add a k-anonymity breach check on top.
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "12345678910",
        "123456789a",
        "1234567890a",
        "0123456789",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "qwertyuiop",
        "qwerty12345",
        "qwerty123456",
        "asdfghjkl1",
        "password12",
        "password123",
        "password1234",
        "passw0rd123",
        "iloveyou12",
        "letmein123",
        "welcome123",
        "football123",
        "baseball123",
        "superman123",
        "trustno1234",
        "abcdefghij",
        "abc1234567",
        "aaaaaaaaaa",
        "zaq12wsxcde",
        "changeme123",
        "administrator",
        "starwars123",
        "dragon1234",
    }
)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    needs_rehash: bool = False


class Passwords:
    """argon2id hasher with its own worker threads (a lifecycle Component: stop ends them)."""

    name = "password-hasher"

    def __init__(
        self,
        *,
        time_cost: int = 2,
        memory_kib: int = 19 * 1024,
        parallelism: int = 1,
        workers: int = 2,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        # Compared against when the account does not exist, so that path costs the same.
        self._dummy_hash = self._hasher.hash("not a real password: equalises timing")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hash, password)

    async def verify(self, stored_hash: str, password: str) -> Verification:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, stored_hash, password)

    async def verify_nothing(self, password: str) -> None:
        """Spend the time a real verification takes (unknown account, OAuth-only account)."""
        await self.verify(self._dummy_hash, password)

    def _hash(self, password: str) -> str:
        with PASSWORD_HASH_SECONDS.time():
            return self._hasher.hash(password)

    def _verify(self, stored_hash: str, password: str) -> Verification:
        started = time.perf_counter()
        try:
            self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verification(ok=False)
        finally:
            PASSWORD_HASH_SECONDS.observe(time.perf_counter() - started)
        return Verification(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored_hash))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ready(self) -> bool:
        return True


def policy_violation(password: str, *, email: str, min_length: int) -> str | None:
    """Why `password` is refused, or None. NIST 800-63B style: length and blocklists, no
    composition rules."""
    if len(password) < min_length:
        return f"must be at least {min_length} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if not password.strip():
        return "must not be blank"
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS:
        return "is too common; choose another"
    if len(set(lowered)) < MIN_DISTINCT_CHARACTERS:
        return f"must use at least {MIN_DISTINCT_CHARACTERS} different characters"
    local_part = email.partition("@")[0].lower()
    if email and (lowered == email.lower() or (len(local_part) >= 4 and local_part in lowered)):
        return "must not contain your email address"
    return None
