"""SQL-file migrations against a real PostgreSQL database (a fresh one per test)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from aether_common.migrations import MigrationError, load_migrations, migrate


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


INITIAL = {
    "0001_create_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY);",
    "0002_add_email.sql": "ALTER TABLE users ADD COLUMN email text NOT NULL DEFAULT '';\n"
    "CREATE UNIQUE INDEX users_email ON users (email);",
}


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_applies_in_order_and_records_each(pg_dsn: str, tmp_path: Path) -> None:
    files = dict(INITIAL) | {"0010_add_name.sql": "ALTER TABLE users ADD COLUMN name text;"}
    applied = await migrate(pg_dsn, write(tmp_path / "m", files))
    assert [m.filename for m in applied] == [
        "0001_create_users.sql",
        "0002_add_email.sql",
        "0010_add_name.sql",
    ]
    rows = await fetch(
        pg_dsn, "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    )
    assert [(r["version"], r["name"]) for r in rows] == [
        (1, "create_users"),
        (2, "add_email"),
        (10, "add_name"),
    ]
    assert all(len(r["checksum"]) == 64 and r["applied_at"] for r in rows)
    columns = await fetch(
        pg_dsn,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'users' ORDER BY ordinal_position",
    )
    assert [c["column_name"] for c in columns] == ["id", "email", "name"]


async def test_rerun_is_a_no_op_and_new_files_are_picked_up(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", INITIAL)
    assert len(await migrate(pg_dsn, directory)) == 2
    assert await migrate(pg_dsn, directory) == []
    write(directory, {"0003_add_name.sql": "ALTER TABLE users ADD COLUMN name text;"})
    assert [m.version for m in await migrate(pg_dsn, directory)] == [3]


async def test_changed_applied_file_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", INITIAL)
    await migrate(pg_dsn, directory)
    write(
        directory,
        {
            "0001_create_users.sql": "CREATE TABLE users (id uuid PRIMARY KEY);",
            "0003_more.sql": "CREATE TABLE more (id int);",
        },
    )
    with pytest.raises(MigrationError, match=r"0001_create_users\.sql was changed"):
        await migrate(pg_dsn, directory)
    # Nothing after the refusal ran.
    rows = await fetch(pg_dsn, "SELECT max(version) AS v FROM schema_migrations")
    assert rows[0]["v"] == 2


async def test_line_endings_alone_do_not_count_as_a_change(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", INITIAL)
    await migrate(pg_dsn, directory)
    path = directory / "0002_add_email.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert await migrate(pg_dsn, directory) == []


async def test_failed_migration_rolls_back_entirely(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m",
        INITIAL
        | {
            "0003_broken.sql": "CREATE TABLE audit (id int);\nSELECT 1 / 0;",
        },
    )
    with pytest.raises(MigrationError, match=r"0003_broken\.sql failed and was rolled back"):
        await migrate(pg_dsn, directory)
    tables = await fetch(pg_dsn, "SELECT to_regclass('audit') AS t")
    assert tables[0]["t"] is None
    versions = await fetch(pg_dsn, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [1, 2]
    # Fixed, it applies on the next run.
    write(directory, {"0003_broken.sql": "CREATE TABLE audit (id int);"})
    assert [m.version for m in await migrate(pg_dsn, directory)] == [3]


async def test_concurrent_runs_apply_each_file_once(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m",
        INITIAL
        | {
            # Slow enough that the runs overlap; without the lock the second CREATE would fail.
            "0003_slow.sql": "SELECT pg_sleep(0.3); CREATE TABLE slow (id int);",
        },
    )
    results = await asyncio.gather(*(migrate(pg_dsn, directory) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, 3]
    rows = await fetch(pg_dsn, "SELECT count(*) AS n FROM schema_migrations")
    assert rows[0]["n"] == 3


async def test_file_numbered_below_an_applied_one_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"})
    await migrate(pg_dsn, directory)
    write(directory, {"0002_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"0002_b\.sql numbered below"):
        await migrate(pg_dsn, directory)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_init.sql": "SELECT 1;"}, "named NNNN_lowercase_name.sql"),
        ({"0001_Init.sql": "SELECT 1;"}, "named NNNN_lowercase_name.sql"),
        ({"0001_a.sql": "SELECT 1;", "00001_b.sql": "SELECT 1;"}, "version 1 is also used"),
    ],
)
def test_badly_named_files_are_refused(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        load_migrations(write(tmp_path / "m", files))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aether_common.migrations", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_applies_and_reports_failures(pg_dsn: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", INITIAL)
    first = await asyncio.to_thread(run_cli, "--dsn", pg_dsn, "--dir", str(directory))
    assert first.returncode == 0, first.stderr + first.stdout
    assert "0002_add_email.sql" in first.stdout
    write(directory, {"0002_add_email.sql": "SELECT 'edited';"})
    refused = await asyncio.to_thread(run_cli, "--dsn", pg_dsn, "--dir", str(directory))
    assert refused.returncode == 1
    assert "0002_add_email.sql was changed" in refused.stdout
