"""PostgreSQL schema migrations: numbered plain SQL files applied in order by a small runner.

Every PostgreSQL-owning service keeps its migrations in a package directory
(`services/<name>/src/aether_<name>/migrations/0001_init.sql`, `0002_add_mfa.sql` ...) and runs
`await migrate(dsn, importlib.resources.files("aether_<name>") / "migrations")` at start, or
`python -m aether_common.migrations --dsn DSN --dir DIR` (or `--package aether_<name>.migrations`)
from a deploy job.

Rules the runner enforces:
- files are `NNNN_name.sql` (4+ digits, lowercase name); any other `.sql` file is an error, so a
  typo cannot be skipped silently;
- each file runs in its own transaction together with its row in
  `schema_migrations(version, name, checksum, applied_at)`: it is applied entirely or not at all
  (so `CREATE INDEX CONCURRENTLY` and other non-transactional statements are not supported);
- a session advisory lock serialises concurrent replicas; the loser waits, then finds nothing
  left to do;
- an applied file whose content changed (sha256, line endings normalised) stops the run, and so
  does a new file numbered below one already applied: history is append-only;
- re-running is a no-op.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.resources
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from aether_common.logging import configure_logging, get_logger

FILE_PATTERN = re.compile(r"(?P<version>\d{4,})_(?P<name>[a-z0-9_]+)\.sql")
# One fixed key: advisory locks are per database, and each service owns its database.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"aether.migrations").digest()[:8], "big", signed=True)

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

log = get_logger(__name__)


class MigrationError(RuntimeError):
    """The run stopped; the message says which file and why. Nothing partial was committed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def load_migrations(directory: Traversable) -> list[Migration]:
    """The migration files of `directory`, sorted by version, checked for naming mistakes."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: dict[int, Migration] = {}
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = FILE_PATTERN.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: migration files are named NNNN_lowercase_name.sql")
        sql = entry.read_text(encoding="utf-8").replace("\r\n", "\n")
        migration = Migration(
            version=int(match["version"]),
            name=match["name"],
            sql=sql,
            checksum=hashlib.sha256(sql.encode()).hexdigest(),
        )
        if migration.version in found:
            raise MigrationError(
                f"{entry.name}: version {migration.version} is also used by "
                f"{found[migration.version].filename}"
            )
        found[migration.version] = migration
    return [found[v] for v in sorted(found)]


async def migrate(
    dsn: str, directory: Traversable, *, lock_timeout: float = 60.0
) -> list[Migration]:
    """Apply the pending migrations of `directory` to the database at `dsn`; return them."""
    migrations = load_migrations(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await _lock(conn, lock_timeout)
        try:
            await conn.execute(CREATE_TABLE)
            pending = _pending(migrations, await _applied(conn))
            for migration in pending:
                await _apply(conn, migration)
            if not pending:
                log.info("schema up to date", version=migrations[-1].version if migrations else 0)
            return pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def _lock(conn: asyncpg.Connection, patience: float) -> None:
    # try-lock in a loop rather than pg_advisory_lock: a stuck peer gives a clear error, not a hang.
    deadline = time.monotonic() + patience
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another migration run held the lock for more than {patience}s; try again"
            )
        await asyncio.sleep(0.1)


async def _applied(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: (row["name"], row["checksum"]) for row in rows}


def _pending(
    migrations: Sequence[Migration], applied: dict[int, tuple[str, str]]
) -> list[Migration]:
    """What is left to apply, after refusing any rewrite of history."""
    known = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            # The database is ahead of this code (e.g. a rollback of the deploy): keep going.
            log.warning("applied migration has no file here", version=version, name=name)
        elif migration.checksum != checksum:
            raise MigrationError(
                f"{migration.filename} was changed after it was applied (checksum "
                f"{checksum[:12]} in the database, {migration.checksum[:12]} on disk); "
                "restore it and add a new migration instead"
            )
    newest = max(applied, default=0)
    pending = [m for m in migrations if m.version not in applied]
    late = [m.filename for m in pending if m.version < newest]
    if late:
        raise MigrationError(
            f"{', '.join(late)} numbered below the newest applied migration ({newest}); "
            "renumber it after that one"
        )
    return pending


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    started = time.perf_counter()
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"{migration.filename} failed and was rolled back: {type(exc).__name__}: {exc}"
        ) from exc
    log.info(
        "migration applied",
        version=migration.version,
        name=migration.name,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


# -- CLI ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aether_common.migrations",
        description="Apply pending NNNN_name.sql migrations to a PostgreSQL database.",
    )
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/database")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", help="directory holding the .sql files")
    where.add_argument("--package", help="package whose directory holds them (aether_x.migrations)")
    parser.add_argument("--lock-timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    configure_logging("migrations", json=not sys.stderr.isatty())
    directory: Traversable = (
        importlib.resources.files(args.package) if args.package else Path(args.dir)
    )
    try:
        applied = asyncio.run(migrate(args.dsn, directory, lock_timeout=args.lock_timeout))
    except (MigrationError, OSError, asyncpg.PostgresError) as exc:
        log.error("migration run failed", error=str(exc))
        return 1
    log.info("migration run finished", applied=[m.filename for m in applied])
    return 0


if __name__ == "__main__":
    sys.exit(main())
