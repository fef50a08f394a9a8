"""The floor of a job: what one no-op job cannot skip, done bare. Two processes, as the platform
has (an HTTP front and a job runner):

    python bench/worker_floor.py api PORT KAFKA_BOOTSTRAP POSTGRES_DSN TOPIC_PREFIX
    python bench/worker_floor.py runner KAFKA_BOOTSTRAP POSTGRES_DSN TOPIC_PREFIX

bench/worker.py starts both on the platform's own servers (a scratch database) and drives them
like the platform, in the same run. Nothing of the kit's: no tokens, rate limits, validation,
gRPC, unit of work, outbox relay, metrics, logging or retries. Per job:

- api: a bare FastAPI route (uvicorn, uvloop, httptools): `POST /jobs` -> one asyncpg
  transaction: the owner's advisory lock, its count of active jobs (the quota), the job row,
  two outbox rows (the `queued` status event and the work message) -> after the commit, the
  work message and the status event produced with aiokafka -> 202 with the id;
- runner: an aiokafka group member of the work topic: the claim (UPDATE ... RETURNING, an
  outbox row for `running`, one transaction), the no-op, the completion (UPDATE, an outbox row
  for `completed`, one transaction); each status event produced after its commit, JSON with
  the job's times, on `<prefix>floor.status`.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id uuid PRIMARY KEY, type text NOT NULL, params jsonb NOT NULL,
    owner_id text NOT NULL, status text NOT NULL, attempts int NOT NULL DEFAULT 0,
    attempt_token uuid, lease_until timestamptz, result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz,
    finished_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS jobs_owner_active ON jobs (owner_id)
    WHERE status IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS outbox (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL, payload bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz);
"""


def topics(prefix: str) -> tuple[str, str]:
    return prefix + "floor.work", prefix + "floor.status"


def _status(job_id: str, status: str, row: Any) -> bytes:
    import orjson

    keys = ("created_at", "started_at", "finished_at")
    times = {k: row[k].isoformat() if row and row[k] else None for k in keys}
    return orjson.dumps({"id": job_id, "status": status, **times})


def api(port: int, bootstrap: str, dsn: str, prefix: str) -> None:
    import asyncpg
    import orjson
    import uvicorn
    from aiokafka import AIOKafkaProducer

    work_topic, status_topic = topics(prefix)
    state: dict[str, Any] = {}

    async def lifespan(app: FastAPI) -> Any:
        state["pool"] = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        await state["pool"].execute(SCHEMA)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        state["producer"] = producer
        yield
        await producer.stop()
        await state["pool"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/jobs", status_code=202)
    async def submit(request: Request) -> Response:
        body = orjson.loads(await request.body())
        owner = body["owner"]
        job_id = uuid.uuid4()
        work = orjson.dumps({"job_id": str(job_id), "type": body["type"]})
        async with state["pool"].acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(hashtext($1))", owner)
            await db.fetchval(
                "SELECT count(*) FROM jobs WHERE owner_id = $1 AND status IN ('queued', 'running')",
                owner,
            )
            row = await db.fetchrow(
                "INSERT INTO jobs (id, type, params, owner_id, status) VALUES ($1, $2, $3, $4,"
                " 'queued') RETURNING created_at, started_at, finished_at",
                job_id,
                body["type"],
                orjson.dumps(body.get("params", {})).decode(),
                owner,
            )
            queued = _status(str(job_id), "queued", row)
            await db.executemany(
                "INSERT INTO outbox (topic, payload) VALUES ($1, $2)",
                [(status_topic, queued), (work_topic, work)],
            )
        producer = state["producer"]
        await producer.send(status_topic, queued, key=job_id.bytes)
        await producer.send(work_topic, work, key=job_id.bytes)
        return Response(orjson.dumps({"id": str(job_id), "status": "queued"}), status_code=202)

    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


def runner(bootstrap: str, dsn: str, prefix: str) -> None:
    import asyncpg
    import orjson
    import uvloop
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    work_topic, status_topic = topics(prefix)

    async def main() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
        await pool.execute(SCHEMA)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        consumer = AIOKafkaConsumer(
            work_topic,
            bootstrap_servers=bootstrap,
            group_id=prefix + "floor.runner",
            enable_auto_commit=True,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()

        slots = asyncio.Semaphore(8)  # the noop type's concurrency per worker process

        async def run(job_id: uuid.UUID) -> None:
            async with slots:
                await attempt(job_id)

        async def attempt(job_id: uuid.UUID) -> None:
            token = uuid.uuid4()
            async with pool.acquire() as db, db.transaction():
                row = await db.fetchrow(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                    " attempt_token = $2, lease_until = now() + interval '30 s',"
                    " started_at = now(), updated_at = now()"
                    " WHERE id = $1 AND status = 'queued'"
                    " RETURNING created_at, started_at, finished_at",
                    job_id,
                    token,
                )
                if row is None:
                    return
                running = _status(str(job_id), "running", row)
                await db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES ($1, $2)", status_topic, running
                )
            await producer.send(status_topic, running, key=job_id.bytes)
            # the no-op
            async with pool.acquire() as db, db.transaction():
                row = await db.fetchrow(
                    "UPDATE jobs SET status = 'completed', result = '{}', finished_at = now(),"
                    " updated_at = now() WHERE id = $1 AND attempt_token = $2"
                    " RETURNING created_at, started_at, finished_at",
                    job_id,
                    token,
                )
                completed = _status(str(job_id), "completed", row)
                await db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES ($1, $2)", status_topic, completed
                )
            await producer.send(status_topic, completed, key=job_id.bytes)

        print("ready", flush=True)
        running: set[asyncio.Task[None]] = set()
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    task = asyncio.create_task(run(uuid.UUID(orjson.loads(record.value)["job_id"])))
                    running.add(task)
                    task.add_done_callback(running.discard)

    uvloop.run(main())


if __name__ == "__main__":
    if sys.argv[1] == "api":
        api(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        runner(sys.argv[2], sys.argv[3], sys.argv[4])
