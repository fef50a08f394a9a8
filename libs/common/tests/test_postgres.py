"""The PostgreSQL component and its unit of work, against the real server the devstack plugin
starts: commit, rollback, KeepWrites, after-commit after the connection is back, the transient
re-run (a real serialization failure: a second connection updates the row the body read in its
snapshot), attempts spent and outages as Unavailable, the one-statement connection, and a
writer process killed or paused mid-transaction."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aether.testing.v1.probe_pb2 import ProbeEvent
from aether_common.errors import Conflict, Forbidden, Unavailable
from aether_common.events import Event, outbox_pg
from aether_common.outages import RETRY_AFTER_S
from aether_common.postgres import PostgresDatabase, UnitOfWork
from aether_common.unit_of_work import KeepWrites
from aether_devstack.servers import free_port
from aether_devstack.testkit import writer_stopped_mid_transaction


class Retries:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def retries() -> Retries:
    return Retries()


@pytest.fixture
async def database(pg_dsn: str, retries: Retries) -> AsyncIterator[PostgresDatabase]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await outbox_pg.install(conn)
        await conn.execute("CREATE TABLE things (id text PRIMARY KEY, n int NOT NULL)")
    finally:
        await conn.close()
    database = PostgresDatabase(pg_dsn, service="test", attempts=4, on_retry=retries)
    await database.start()
    yield database
    await database.stop()


def probed(n: int) -> Event[ProbeEvent]:
    payload = ProbeEvent(entity_id="t", sequence=n)
    return Event(type="aether.testing.probed.v1", subject="t", payload=payload, source="tests")


async def things(database: PostgresDatabase) -> dict[str, int]:
    async with database.connection() as conn:
        return {row["id"]: row["n"] for row in await conn.fetch("SELECT id, n FROM things")}


async def outbox(database: PostgresDatabase) -> list[str]:
    async with database.connection() as conn:
        return [row["topic"] for row in await conn.fetch("SELECT topic FROM event_outbox")]


async def test_commit_stores_the_writes_and_the_events_then_runs_the_actions(
    database: PostgresDatabase,
) -> None:
    seen_by_actions: list[dict[str, int]] = []

    async def body(uow: UnitOfWork) -> str:
        await uow.conn.execute("INSERT INTO things VALUES ('a', 1)")
        await uow.emit(probed(1))

        async def look() -> None:  # on another connection: committed already
            seen_by_actions.append(await things(database))

        uow.after_commit(look)
        return "done"

    assert await database.transaction(body) == "done"

    assert await things(database) == {"a": 1}
    assert await outbox(database) == ["aether.testing.probed.v1"]
    assert seen_by_actions == [{"a": 1}]


async def test_after_commit_actions_run_once_the_connection_is_back(
    pg_dsn: str, retries: Retries
) -> None:
    database = PostgresDatabase(pg_dsn, service="test", max_size=1, on_retry=retries)
    await database.start()
    try:
        seen: list[int] = []

        async def body(uow: UnitOfWork) -> None:
            async def use_the_pool() -> None:  # would wait forever if the body's conn was held
                async with database.connection() as conn:
                    seen.append(await conn.fetchval("SELECT 1"))

            uow.after_commit(use_the_pool)

        await database.transaction(body)
        assert seen == [1]
    finally:
        await database.stop()


async def test_an_error_rolls_back_and_skips_the_actions(database: PostgresDatabase) -> None:
    ran: list[str] = []

    async def body(uow: UnitOfWork) -> None:
        await uow.conn.execute("INSERT INTO things VALUES ('a', 1)")
        await uow.emit(probed(1))

        async def action() -> None:
            ran.append("action")

        uow.after_commit(action)
        raise Conflict("refused")

    with pytest.raises(Conflict):
        await database.transaction(body)

    assert await things(database) == {}
    assert await outbox(database) == []
    assert ran == []


async def test_keep_writes_commits_runs_the_actions_then_raises(
    database: PostgresDatabase,
) -> None:
    ran: list[str] = []

    async def body(uow: UnitOfWork) -> None:
        await uow.conn.execute("INSERT INTO things VALUES ('a', 1)")
        await uow.emit(probed(1))

        async def action() -> None:
            ran.append("action")

        uow.after_commit(action)
        raise KeepWrites(Forbidden("refused, but recorded"))

    with pytest.raises(Forbidden, match="recorded"):
        await database.transaction(body)

    assert await things(database) == {"a": 1}
    assert await outbox(database) == ["aether.testing.probed.v1"]
    assert ran == ["action"]


async def test_a_failing_action_is_logged_and_the_call_still_succeeds(
    database: PostgresDatabase,
) -> None:
    async def body(uow: UnitOfWork) -> int:
        await uow.conn.execute("INSERT INTO things VALUES ('a', 1)")

        async def broken() -> None:
            raise RuntimeError("mail server away")

        uow.after_commit(broken)
        return 7

    assert await database.transaction(body) == 7
    assert await things(database) == {"a": 1}


async def _conflicting_increment(database: PostgresDatabase, pg_dsn: str, conflicts: int) -> int:
    """Increment 'a' in a REPEATABLE READ transaction; during the first `conflicts` attempts a
    second connection updates 'a' after the body's snapshot was taken, so PostgreSQL refuses the
    body's update with a real serialization failure. Returns the body's number of runs."""
    async with database.connection() as conn:
        await conn.execute("INSERT INTO things VALUES ('a', 0)")
    runs = 0

    async def body(uow: UnitOfWork) -> None:
        nonlocal runs
        runs += 1
        await uow.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        n = await uow.conn.fetchval("SELECT n FROM things WHERE id = 'a'")  # the snapshot
        if runs <= conflicts:
            other = await asyncpg.connect(pg_dsn)
            try:
                await other.execute("UPDATE things SET n = n + 100 WHERE id = 'a'")
            finally:
                await other.close()
        await uow.conn.execute("UPDATE things SET n = $1 WHERE id = 'a'", n + 1)
        await uow.emit(probed(runs))

    await database.transaction(body)
    return runs


async def test_a_serialization_failure_re_runs_the_body_in_a_fresh_transaction(
    database: PostgresDatabase, pg_dsn: str, retries: Retries
) -> None:
    runs = await _conflicting_increment(database, pg_dsn, conflicts=2)

    assert runs == 3
    assert retries.count == 2
    # The winning run read the other writer's 200 in its fresh snapshot: nothing lost.
    assert await things(database) == {"a": 201}
    assert await outbox(database) == ["aether.testing.probed.v1"]  # the failed runs' rolled back


async def test_a_conflict_outlasting_the_attempts_is_unavailable_with_retry_after(
    database: PostgresDatabase, pg_dsn: str, retries: Retries
) -> None:
    with pytest.raises(Unavailable) as caught:
        await _conflicting_increment(database, pg_dsn, conflicts=99)

    assert caught.value.retry_after == RETRY_AFTER_S
    assert isinstance(caught.value.__cause__, asyncpg.SerializationError)
    assert retries.count == database.attempts - 1
    assert await outbox(database) == []


async def test_a_server_that_is_away_is_unavailable_not_an_internal_error() -> None:
    away = PostgresDatabase(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none", service="test", min_size=0
    )
    await away.start()
    try:
        assert not await away.ready()

        async def body(uow: UnitOfWork) -> None:
            raise AssertionError("never runs: no connection")

        with pytest.raises(Unavailable, match="test service") as caught:
            await away.transaction(body)
        assert caught.value.retry_after == RETRY_AFTER_S
        with pytest.raises(Unavailable):
            async with away.connection():
                pass
    finally:
        await away.stop()


async def test_a_stopped_component_is_not_ready(database: PostgresDatabase) -> None:
    assert await database.ready()
    await database.stop()
    assert not await database.ready()


# -- a writer that stops mid-transaction ------------------------------------------------------
HOLDER = """
import asyncio, sys
from aether_common.postgres import PostgresDatabase

async def main() -> None:
    database = PostgresDatabase(sys.argv[1], service="holder", idle_in_transaction_timeout_s=1)
    await database.start()

    async def hold(uow):
        await uow.conn.execute("UPDATE things SET n = n + 100 WHERE id = 'a'")
        print("locked", flush=True)
        await asyncio.sleep(3600)  # stopped or killed here, inside the transaction

    await database.transaction(hold)

asyncio.run(main())
"""


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "paused"])
async def test_a_writer_stopped_mid_transaction_holds_the_row_at_most_its_idle_timeout(
    database: PostgresDatabase, pg_dsn: str, stop: signal.Signals
) -> None:
    async with database.connection() as conn:
        await conn.execute("INSERT INTO things VALUES ('a', 0)")
    async with writer_stopped_mid_transaction(HOLDER, pg_dsn, stop=stop) as stopped:
        await database.transaction(
            lambda uow: uow.conn.execute("UPDATE things SET n = n + 1 WHERE id = 'a'")
        )
        waited = time.monotonic() - stopped

    # Killed: its connection closed, rolled back at once. Paused: ended after its 1 s idle
    # timeout. Either way its write is gone and the other writer's landed.
    assert waited < (1.0 if stop is signal.SIGKILL else 3.0), waited
    assert await things(database) == {"a": 1}
