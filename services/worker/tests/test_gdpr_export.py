"""`gdpr.export` through the real job system (worker in-process: PostgreSQL, Kafka, S3), a real
auth (in-process, its own database, listing the worker as a service client and a delegate) and
a real ai (in-process); chat, alerts and memory are scripted peers on real sockets (their
ExportMyData is written elsewhere), each answering a small document and recording the metadata
it was called with. The mail lands in the local SMTP server's Maildir.

What is checked: the zip holds every service's document as it answered plus the worker's record
and a manifest; each peer was called with the worker's own token acting for the owner; the mail
carries the job's gateway URL; a service away is retried and the job completes once, mailing
once; a handler run again for a mailed job mails no one; progress names every service; a job
cancelled before its zip is stored stores none and mails no one; params are `{}` only.
"""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_ai.app import AiApp
from aether_ai.config import AiSettings
from aether_auth.app import AuthApp
from aether_auth.config import AuthSettings
from aether_common.errors import Unavailable
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_common.mailer import Mailer, SmtpServer
from aether_common.postgres import PostgresDatabase, jsonb_as_objects
from aether_common.service_tokens import ServiceCredentials
from aether_devstack import testkit
from aether_devstack.endpoints import Endpoints
from aether_devstack.testkit import AppRunner, ScriptedPeer, fresh_database
from aether_worker.exports_clients import SERVICES, ExportClient, export_clients
from aether_worker.gdpr_export import SUBJECT, ExportMail, ExportParams, gdpr_export_job
from aether_worker.handler import JobCancelled

WORKER_SECRET = secrets.token_urlsafe(32)
PUBLIC_URL = "http://127.0.0.1:8080"
SCRIPTED = ("chat", "alerts", "memory")
PASSWORD = "correct horse battery staple"


# -- real auth and ai, scripted chat / alerts / memory -------------------------------------------
@dataclass
class Peers:
    auth: Any  # AuthService stub
    auth_address: str
    ai: Any  # AiService stub
    targets: dict[str, str]
    scripted: dict[str, ScriptedPeer]

    async def user(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        email = f"{testkit.unique_name('ada-')}@example.com"
        user = (
            await self.auth.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Ada")
            )
        ).user
        login = await self.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
        return user.id, email, testkit.bearer_metadata(login.tokens.access_token)


def _document(service: str) -> Callable[[Any], Any]:
    """A small export as a service would answer it, naming the user it was asked for."""
    response = {
        "chat": chat_pb2.ExportMyDataResponse,
        "alerts": alerts_pb2.ExportMyDataResponse,
        "memory": memory_pb2.ExportMyDataResponse,
    }[service]

    def answer(_: Any) -> Any:
        body = {"service": service, "version": 1, "items": [{"n": 1}, {"n": 2}]}
        return response(json=json.dumps(body))

    return answer


SCRIPTED_SERVICES = {
    "chat": (chat_pb2, chat_pb2_grpc, "ChatService"),
    "alerts": (alerts_pb2, alerts_pb2_grpc, "AlertsService"),
    "memory": (memory_pb2, memory_pb2_grpc, "MemoryService"),
}


@pytest.fixture
async def peers(
    aether_endpoints: Endpoints, auth_listing_worker: Callable[[str, str], AuthSettings]
) -> AsyncIterator[Peers]:
    if not aether_endpoints.llm_base_url:
        pytest.skip("this backend runs no LLM server (ai needs AETHER_LLM_BASE_URL to start)")
    runner = AppRunner()
    async with (
        fresh_database(aether_endpoints.postgres_dsn) as auth_dsn,
        fresh_database(aether_endpoints.postgres_dsn) as ai_dsn,
    ):
        try:
            auth = AuthApp(
                auth_listing_worker(auth_dsn, WORKER_SECRET),
                grpc_host="127.0.0.1",
                grpc_port=0,
            )
            await runner.start(auth.components(events=False))
            ai = AiApp(
                AiSettings.model_validate(
                    {
                        "environment": "test",
                        "database_url": ai_dsn,
                        "database_pool_size": 3,
                        "redis_url": aether_endpoints.redis_url,
                        "kafka_bootstrap": aether_endpoints.kafka_bootstrap,
                        "topic_prefix": testkit.unique_name("t-ai-") + ".",
                        "auth_grpc_target": auth.grpc.address,
                        "memory_grpc_target": "127.0.0.1:9",
                        "llm_base_url": aether_endpoints.llm_base_url,
                        "cache_prefix": testkit.unique_name("t-ai-cache-") + ":",
                    }
                ),
                grpc_host="127.0.0.1",
                grpc_port=0,
            )
            await runner.start(ai.components(events=False))
            scripted: dict[str, ScriptedPeer] = {}
            targets = {"auth": auth.grpc.address, "ai": ai.grpc.address}
            async with _serve_scripted(scripted, targets):
                yield Peers(
                    auth_pb2_grpc.AuthServiceStub(runner.connect(auth.grpc.address, timeout=30)),
                    auth.grpc.address,
                    ai_pb2_grpc.AiServiceStub(runner.connect(ai.grpc.address, timeout=30)),
                    targets,
                    scripted,
                )
        finally:
            await runner.stop()


class _serve_scripted:  # an async context manager used like a function
    """Serves the three scripted peers, filling `scripted` and `targets`."""

    def __init__(self, scripted: dict[str, ScriptedPeer], targets: dict[str, str]) -> None:
        self._scripted, self._targets = scripted, targets
        self._servers: list[Any] = []

    async def __aenter__(self) -> None:
        for name, (pb2, grpc_module, service) in SCRIPTED_SERVICES.items():
            descriptor = pb2.DESCRIPTOR.services_by_name[service]
            peer = ScriptedPeer(descriptor, answers={"ExportMyData": _document(name)})
            server = testkit.serve(
                name,
                getattr(grpc_module, f"add_{service}Servicer_to_server"),
                peer.servicer(getattr(grpc_module, f"{service}Servicer")),
                descriptor,
            )
            peer.address = await server.__aenter__()
            self._servers.append(server)
            self._scripted[name] = peer
            self._targets[name] = peer.address

    async def __aexit__(self, *exc: object) -> None:
        for server in reversed(self._servers):
            await server.__aexit__(None, None, None)


@dataclass
class Export:
    """What a test needs to build the job type: the clients, the identity, a database handle on
    the worker's database, the mail."""

    clients: dict[str, ExportClient]
    credentials: ServiceCredentials
    database: PostgresDatabase
    mail: ExportMail

    def job(self) -> Any:
        return gdpr_export_job(self.clients, self.credentials, self.database, self.mail)


@pytest.fixture
async def export(peers: Peers, pg_dsn: str, aether_endpoints: Endpoints) -> AsyncIterator[Export]:
    credentials = ServiceCredentials(peers.auth_address, "worker", WORKER_SECRET, timeout_s=5)
    clients = export_clients({name: peers.targets[name] for name in SERVICES}, timeout_s=10)
    # The worker's database, as WorkerApp's (the same migrations; whoever starts first applies).
    database = PostgresDatabase(
        pg_dsn,
        service="worker-export",
        migrations=files("aether_worker") / "migrations",
        max_size=2,
        init=jsonb_as_objects,
    )
    mailer = Mailer(
        SmtpServer(aether_endpoints.smtp_host, aether_endpoints.smtp_port),
        sender="Aether <no-reply@aether.local>",
    )
    components: list[Any] = [credentials, database, *clients.values()]
    for component in components:
        await component.start()
    yield Export(clients, credentials, database, ExportMail(mailer, PUBLIC_URL))
    for component in reversed(components):
        await component.stop()


def zip_files(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


# -- tests ---------------------------------------------------------------------------------------
async def test_the_zip_holds_every_services_document_and_the_link_is_mailed(
    start_worker: Any, peers: Peers, export: Export, maildir: Path, job_context: Any
) -> None:
    worker = await start_worker(job_types=[export.job()])
    alice, email, as_alice = await peers.user()
    await peers.ai.SetMode(ai_pb2.SetModeRequest(mode="learn"), metadata=as_alice)
    mine = testkit.bearer_metadata(worker.token(alice))

    job = await worker.submit(mine, "gdpr.export", {})
    done = await worker.finished(mine, job.id, within=60)

    assert done.status == "completed", done.error
    [artifact] = done.artifacts
    assert (artifact.name, artifact.content_type) == ("export.zip", "application/zip")
    async with httpx.AsyncClient() as http:
        data = (await http.get(artifact.url)).raise_for_status().content
    files = zip_files(data)
    assert set(files) == {f"{s}.json" for s in (*SERVICES, "worker")} | {"manifest.json"}
    assert files["auth.json"]["user"]["email"] == email
    assert files["ai.json"]["user_id"] == alice
    assert files["ai.json"]["preferences"]["mode"] == "learn"
    for name in SCRIPTED:
        assert files[f"{name}.json"]["items"] == [{"n": 1}, {"n": 2}]
    assert [j["id"] for j in files["worker.json"]["jobs"]] == [job.id]
    manifest = files["manifest.json"]
    assert (manifest["job_id"], manifest["user_id"], manifest["version"]) == (job.id, alice, 1)
    assert manifest["services"]["chat"]["counts"] == {"items": 2}
    assert manifest["services"]["auth"]["version"] == 1
    assert manifest["services"]["auth"]["counts"]["sessions"] == 1
    # The result: per service its size and counts, the zip's size, the mail.
    result = json.loads(done.result_json)
    assert result["zip_bytes"] == artifact.size == len(data)
    assert result["services"] == manifest["services"]
    assert result["mail"]["sent"] is True

    # Each scripted peer was called with the worker's own token acting for Alice.
    for name in SCRIPTED:
        [call] = peers.scripted[name].calls_to("ExportMyData")
        token = call.metadata["authorization"].removeprefix("Bearer ")
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == "service:worker"
        assert call.metadata[ON_BEHALF_OF_KEY] == alice

    # The mail: to auth's address, with the job's gateway URL and not the signed S3 URL.
    mail = await testkit.await_mail(maildir, email, SUBJECT)
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert f"{PUBLIC_URL}/api/jobs/{job.id}" in body
    assert "X-Amz" not in body
    assert "Signature" not in body

    # The handler run again for this job (an attempt that came back) mails no one.
    again = await export.job().run(job_context(job_id=job.id, owner_id=alice), ExportParams())
    assert again["mail"] == {
        "sent": True,
        "to": email,
        "link": f"{PUBLIC_URL}/api/jobs/{job.id}",
        "this_attempt": False,
    }
    assert len(testkit.mails_to(maildir, email, SUBJECT)) == 1


async def test_a_service_away_is_retried_and_the_job_mails_once(
    start_worker: Any, peers: Peers, export: Export, maildir: Path
) -> None:
    # memory is away (longer than the channel's own retries) until the job has seen it.
    memory = peers.scripted["memory"]
    down = {"memory": True}

    def away_then_back(request: Any) -> Any:
        if down["memory"]:
            raise Unavailable("memory is restarting")
        return _document("memory")(request)

    memory.answers["ExportMyData"] = away_then_back
    worker = await start_worker(job_types=[export.job()])
    alice, email, _ = await peers.user()
    mine = testkit.bearer_metadata(worker.token(alice))

    job = await worker.submit(mine, "gdpr.export", {})
    failed_once = await worker.until(
        mine, job.id, lambda j: j.error.code == "memory_unavailable", within=30
    )
    assert failed_once.status in ("queued", "running")  # retried, not failed
    assert not failed_once.artifacts
    assert testkit.mails_to(maildir, email, SUBJECT) == []
    down["memory"] = False
    done = await worker.finished(mine, job.id, within=60)

    assert done.status == "completed", done.error
    assert done.attempts >= 2
    await testkit.await_mail(maildir, email, SUBJECT)
    assert len(testkit.mails_to(maildir, email, SUBJECT)) == 1
    assert [s for s in await worker.statuses(job.id) if s[1] == "completed"] == [
        ("running", "completed")
    ]


async def test_a_refusal_fails_the_job_at_once(
    start_worker: Any, peers: Peers, export: Export
) -> None:
    # alerts answers an empty response: its `json` is "", not a document (a retry cannot fix it).
    peers.scripted["alerts"].answers.pop("ExportMyData")
    worker = await start_worker(job_types=[export.job()])
    alice, _, _ = await peers.user()
    mine = testkit.bearer_metadata(worker.token(alice))
    job = await worker.submit(mine, "gdpr.export", {})
    done = await worker.finished(mine, job.id, within=60)
    assert (done.status, done.error.code, done.attempts) == ("failed", "bad_export", 1)
    assert not done.artifacts


async def test_progress_per_service_and_cancel_before_the_zip_stores_nothing(
    peers: Peers, export: Export, job_context: Any, maildir: Path
) -> None:
    alice, email, _ = await peers.user()
    # Checkpoints: one progress per service (5), the worker's part, the zip's progress, then
    # the checkpoint before the zip is stored: cancelled there.
    ctx = job_context(owner_id=alice, cancel_at=len(SERVICES) + 3)
    with pytest.raises(JobCancelled):
        await export.job().run(ctx, ExportParams())
    assert [m for _, m in ctx.progress_log] == [
        *(f"exporting from {s}" for s in SERVICES),
        "exporting from worker",
        "writing export.zip",
    ]
    percents = [p for p, _ in ctx.progress_log]
    assert percents == sorted(percents)
    assert ctx.artifacts == {}
    assert testkit.mails_to(maildir, email, SUBJECT) == []


def test_params_are_empty() -> None:
    assert ExportParams.model_validate({}) == ExportParams()
    with pytest.raises(ValidationError) as refused:
        ExportParams.model_validate({"services": ["auth"]})
    assert refused.value.errors()[0]["loc"] == ("services",)
