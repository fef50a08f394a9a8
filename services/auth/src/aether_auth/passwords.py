"""Password hashing (argon2id through libsodium, off the event loop) and the password policy.

Hashing takes tens of milliseconds of CPU on purpose; it runs in a dedicated thread pool
(libsodium releases the GIL) so the event loop keeps serving other calls meanwhile. A login with
an unknown email still pays for one verification, so response time does not reveal accounts.

libsodium (PyNaCl) rather than argon2-cffi: its argon2id picks AVX2/AVX-512 code at run time,
while argon2-cffi's portable wheels are built for SSE2 only; at the same parameters it costs
about a quarter less CPU here (`make bench-auth` prints both). Its hashes are the standard PHC
strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), so earlier hashes still verify and are
rehashed at the next login when the parameters changed.
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from aether_auth.metrics import PASSWORD_HASH_SECONDS

# OWASP's argon2id configurations (Password Storage Cheat Sheet), "equivalent in the defense
# they provide": memory in KiB -> the fewest passes allowed with at least that memory.
OWASP_ARGON2ID = ((47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5))
# The last one is also Keycloak's default, so our login figures compare like for like.
DEFAULT_TIME_COST = 5
DEFAULT_MEMORY_KIB = 7_168
_PHC_PARAMETERS = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")


def meets_owasp_minimum(time_cost: int, memory_kib: int) -> bool:
    """Whether (t, m) is at least one of OWASP's configurations."""
    return any(memory_kib >= m and time_cost >= t for m, t in OWASP_ARGON2ID)


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
    """argon2id hasher with its own worker threads (a lifecycle Component: stop ends them).

    One lane (p=1), as in every OWASP configuration: libsodium computes lanes one after the
    other, so more would only cost more.
    """

    name = "password-hasher"

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_kib: int = DEFAULT_MEMORY_KIB,
        workers: int = 2,
    ) -> None:
        self.time_cost = time_cost
        self.memory_kib = memory_kib
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        # Compared against when the account does not exist, so that path costs the same.
        self._dummy_hash = self._hash("not a real password: equalises timing")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._timed_hash, password)

    async def verify(self, stored_hash: str, password: str) -> Verification:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, stored_hash, password)

    async def verify_nothing(self, password: str) -> None:
        """Spend the time a real verification takes (unknown account, OAuth-only account)."""
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether `stored_hash` was made with other parameters than the configured ones."""
        found = _PHC_PARAMETERS.match(stored_hash)
        if found is None:
            return True
        memory, passes, lanes = (int(group) for group in found.groups())
        return (memory, passes, lanes) != (self.memory_kib, self.time_cost, 1)

    def _hash(self, password: str) -> str:
        hashed: bytes = argon2id.str(
            password.encode(), opslimit=self.time_cost, memlimit=self.memory_kib * 1024
        )
        return hashed.decode("ascii")

    def _timed_hash(self, password: str) -> str:
        with PASSWORD_HASH_SECONDS.time():
            return self._hash(password)

    def _verify(self, stored_hash: str, password: str) -> Verification:
        started = time.perf_counter()
        try:
            argon2id.verify(stored_hash.encode("ascii"), password.encode())
        except (nacl.exceptions.InvalidkeyError, UnicodeEncodeError):
            # A wrong password, or a stored value that is no argon2id hash at all.
            return Verification(ok=False)
        finally:
            PASSWORD_HASH_SECONDS.observe(time.perf_counter() - started)
        return Verification(ok=True, needs_rehash=self.needs_rehash(stored_hash))

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
