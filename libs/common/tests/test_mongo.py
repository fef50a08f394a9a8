"""The MongoDB component and its unit of work, against the real server the devstack plugin
starts: commit, rollback, KeepWrites, after-commit order, the transient re-run (a write conflict
made by a second session holding the document in its open transaction), key serialisation and
outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from aether.testing.v1.probe_pb2 import ProbeEvent
from aether_common.errors import Conflict, Forbidden, Unavailable
from aether_common.events import Event, outbox_mongo
from aether_common.mongo import MongoDatabase, UnitOfWork
from aether_common.outages import RETRY_AFTER_S
from aether_common.unit_of_work import KeepWrites
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port

Doc = dict[str, Any]
Database = MongoDatabase[UnitOfWork]


async def _things(db: AsyncDatabase[Doc]) -> None:
    await db.create_collection("things")  # collections cannot be created in a transaction


class Retries:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def retries() -> Retries:
    return Retries()


@pytest.fixture
async def database(
    aether_endpoints: Endpoints, mongo_db_name: str, retries: Retries
) -> AsyncIterator[Database]:
    database = MongoDatabase(
        aether_endpoints.mongo_url,
        mongo_db_name,
        service="test",
        unit_of_work=UnitOfWork,
        indexes=(_things, outbox_mongo.ensure_indexes),
        attempts=5,
        on_retry=retries,
    )
    await database.start()
    yield database
    await database.client.drop_database(mongo_db_name)
    await database.stop()


def things(database: Database) -> AsyncCollection[Doc]:
    return database.db["things"]


async def outbox(database: Database) -> list[str]:
    return [doc["topic"] async for doc in database.db[outbox_mongo.OUTBOX_COLLECTION].find({})]


def probed(n: int) -> Event[ProbeEvent]:
    payload = ProbeEvent(entity_id="t", sequence=n)
    return Event(type="aether.testing.probed.v1", subject="t", payload=payload, source="tests")


@asynccontextmanager
async def held(database: Database, doc_id: str) -> AsyncIterator[Any]:
    """A second session that wrote `doc_id` in a transaction it keeps open: every other
    transaction writing that document conflicts until the session lets go."""
    async with database.client.start_session() as holder:
        await holder.start_transaction()
        await things(database).update_one(
            {"_id": doc_id}, {"$set": {"held": True}}, upsert=True, session=holder
        )
        try:
            yield holder
        finally:
            if holder.in_transaction:
                await holder.abort_transaction()


async def test_commit_stores_the_writes_and_the_events_then_runs_the_actions(
    database: Database,
) -> None:
    seen_by_actions: list[Doc | None] = []

    async def body(uow: UnitOfWork) -> str:
        await things(database).insert_one({"_id": "a", "n": 1}, session=uow.session)
        await uow.emit(probed(1))

        async def look() -> None:  # from outside the transaction: committed already
            seen_by_actions.append(await things(database).find_one({"_id": "a"}))

        uow.after_commit(look)
        return "done"

    assert await database.transaction(body) == "done"

    assert await things(database).find_one({"_id": "a"}) == {"_id": "a", "n": 1}
    assert await outbox(database) == ["aether.testing.probed.v1"]
    assert seen_by_actions == [{"_id": "a", "n": 1}]


async def test_on_events_is_told_of_each_commit_that_emitted_events_only(
    database: Database,
) -> None:
    told: list[str] = []
    database.on_events = lambda: told.append("events")

    async def with_events(uow: UnitOfWork) -> None:
        await things(database).insert_one({"_id": "a"}, session=uow.session)
        await uow.emit(probed(1))

    async def without(uow: UnitOfWork) -> None:
        await things(database).insert_one({"_id": "b"}, session=uow.session)

    async def emitted_then_dropped(uow: UnitOfWork) -> None:
        await uow.emit(probed(2))
        await uow.restart()  # the events went with the aborted transaction
        await things(database).insert_one({"_id": "c"}, session=uow.session)

    async def refused(uow: UnitOfWork) -> None:
        await uow.emit(probed(3))
        raise Conflict("refused")

    await database.transaction(with_events)
    await database.transaction(without)
    await database.transaction(emitted_then_dropped)
    with pytest.raises(Conflict):
        await database.transaction(refused)

    assert told == ["events"]
    assert await outbox(database) == ["aether.testing.probed.v1"]


async def test_an_error_rolls_back_and_skips_the_actions(database: Database) -> None:
    ran: list[str] = []

    async def body(uow: UnitOfWork) -> None:
        await things(database).insert_one({"_id": "a"}, session=uow.session)
        await uow.emit(probed(1))

        async def action() -> None:
            ran.append("action")

        uow.after_commit(action)
        raise Conflict("refused")

    with pytest.raises(Conflict):
        await database.transaction(body)

    assert await things(database).count_documents({}) == 0
    assert await outbox(database) == []
    assert ran == []


async def test_keep_writes_commits_runs_the_actions_then_raises(database: Database) -> None:
    ran: list[str] = []

    async def body(uow: UnitOfWork) -> None:
        await things(database).insert_one({"_id": "failed-login"}, session=uow.session)
        await uow.emit(probed(1))

        async def action() -> None:
            ran.append("mail")

        uow.after_commit(action)
        raise KeepWrites(Forbidden("wrong password"))

    with pytest.raises(Forbidden, match="wrong password"):
        await database.transaction(body)

    assert await things(database).count_documents({"_id": "failed-login"}) == 1
    assert await outbox(database) == ["aether.testing.probed.v1"]
    assert ran == ["mail"]


async def test_after_commit_actions_run_in_order_and_a_failing_one_is_only_logged(
    database: Database,
) -> None:
    ran: list[str] = []

    async def body(uow: UnitOfWork) -> int:
        for name in ("first", "second", "third"):

            async def action(name: str = name) -> None:
                ran.append(name)
                if name == "second":
                    raise RuntimeError("the mail server is away")

            uow.after_commit(action)
        await things(database).insert_one({"_id": "a"}, session=uow.session)
        return 7

    assert await database.transaction(body) == 7  # committed: the call succeeded

    assert ran == ["first", "second", "third"]


async def test_restart_drops_the_writes_and_actions_so_far(database: Database) -> None:
    ran: list[str] = []

    async def body(uow: UnitOfWork) -> None:
        async def dropped() -> None:
            ran.append("dropped")

        async def kept() -> None:
            ran.append("kept")

        await things(database).insert_one({"_id": "first try"}, session=uow.session)
        uow.after_commit(dropped)
        await uow.restart()
        await things(database).insert_one({"_id": "second try"}, session=uow.session)
        uow.after_commit(kept)

    await database.transaction(body)

    assert [doc["_id"] async for doc in things(database).find({})] == ["second try"]
    assert ran == ["kept"]


async def test_a_write_conflict_re_runs_the_body_in_a_fresh_transaction(
    database: Database, retries: Retries
) -> None:
    await things(database).insert_one({"_id": "counter", "n": 0})
    tries = 0
    ran: list[int] = []

    async with held(database, "counter") as holder:

        async def body(uow: UnitOfWork) -> int:
            nonlocal tries
            tries += 1
            await uow.emit(probed(tries))
            if tries == 3:  # the other writer finishes meanwhile
                await holder.abort_transaction()
            await things(database).update_one(
                {"_id": "counter"}, {"$inc": {"n": 1}}, session=uow.session
            )

            async def action(attempt: int = tries) -> None:
                ran.append(attempt)

            uow.after_commit(action)
            return tries

        assert await database.transaction(body) == 3

    assert (retries.count, ran) == (2, [3])  # only the committed attempt's actions ran
    assert await things(database).find_one({"_id": "counter"}) == {"_id": "counter", "n": 1}
    assert await outbox(database) == ["aether.testing.probed.v1"]


async def test_a_conflict_that_outlasts_the_attempts_is_unavailable(
    database: Database, retries: Retries
) -> None:
    await things(database).insert_one({"_id": "counter", "n": 0})
    tries = 0

    async def body(uow: UnitOfWork) -> None:
        nonlocal tries
        tries += 1
        await things(database).update_one(
            {"_id": "counter"}, {"$inc": {"n": 1}}, session=uow.session
        )

    async with held(database, "counter"):
        with pytest.raises(Unavailable) as raised:
            await database.transaction(body, attempts=3)

    assert tries == 3
    assert retries.count == 2
    assert raised.value.retry_after == RETRY_AFTER_S
    assert await things(database).find_one({"_id": "counter"}) == {"_id": "counter", "n": 0}


async def test_one_key_runs_one_transaction_at_a_time_actions_included(
    database: Database,
) -> None:
    steps: list[str] = []
    first_inside = asyncio.Event()
    release_first = asyncio.Event()

    def body(name: str, *, wait: bool = False) -> Any:
        async def run(uow: UnitOfWork) -> None:
            steps.append(f"{name} body")
            if wait:
                first_inside.set()
                await release_first.wait()
            await things(database).insert_one({"_id": name}, session=uow.session)

            async def action() -> None:
                await asyncio.sleep(0.01)  # the lock is still held: nobody else starts
                steps.append(f"{name} after commit")

            uow.after_commit(action)

        return run

    first = asyncio.create_task(database.transaction(body("a", wait=True), key="room:1"))
    await first_inside.wait()
    second = asyncio.create_task(database.transaction(body("b"), key="room:1"))
    other_key = asyncio.create_task(database.transaction(body("c"), key="room:2"))
    await other_key  # another key does not wait for room:1
    await asyncio.sleep(0.05)
    assert steps == ["a body", "c body", "c after commit"]

    release_first.set()
    await asyncio.gather(first, second)

    assert steps[3:] == ["a after commit", "b body", "b after commit"]
    assert database._locks._locks == {}  # nobody holds or waits: the locks are gone


async def test_an_outage_is_unavailable_and_readiness_says_so() -> None:
    database = MongoDatabase(
        f"mongodb://127.0.0.1:{free_port()}",
        "nowhere",
        service="test",
        unit_of_work=UnitOfWork,
        timeout_s=0.2,
    )
    called = 0

    async def body(uow: UnitOfWork) -> None:
        nonlocal called
        called += 1
        await uow.db["things"].insert_one({"_id": "a"}, session=uow.session)

    try:
        assert not await database.ready()
        with pytest.raises(Unavailable) as raised:
            await database.transaction(body)
        assert called == 1  # an outage is not re-run: each try would wait out the selection
        assert raised.value.retry_after == RETRY_AFTER_S
        assert "test service" in raised.value.detail
    finally:
        await database.stop()
