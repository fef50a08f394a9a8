"""`gdpr.export`: everything the platform holds about a user, from every service through its own
ExportMyData, zipped as the job's artifact, and a link mailed to the user (docs/gdpr-export.md).

- **params**: `{}` (extra fields refused). Users submit it for themselves.
- **run**: each service's ExportMyData (auth, chat, ai, alerts, memory, in that order) with the
  worker's own service token acting for the job's owner (aether_common.delegation; each service
  lists the worker in its `<SERVICE>_DELEGATING_SERVICES`), plus the worker's own record of the
  user's jobs (its repository, read-only); progress after each service. Then `export.zip`: one
  `<service>.json` per service (the document as the service wrote it), `worker.json` and a
  `manifest.json` (versions, counts, sizes, time), stored with `ctx.put_artifact`.
- **mail**: once the zip is stored, to the `email` in auth's document, with the job's URL on
  the public gateway (`<WORKER_PUBLIC_URL>/api/jobs/<id>`), never the S3 URL (it expires in
  15 min; the job's answer signs a fresh one each time it is read).
- **once**: the mail is sent inside a transaction that first inserts the job's `export_mails`
  row and commits only after the SMTP server accepted the message. A retried or concurrent
  attempt finds the row (a concurrent one waits on its lock) and sends nothing; an attempt that
  dies before the commit leaves no row, so the next attempt mails. A duplicate needs the
  process to die between the SMTP server's acceptance and the commit.
- **failures**: a service away, slow or busy, auth away, the SMTP server away: retried with
  backoff (the whole export again: handlers restart from scratch). A refusal (a service that
  does not list the worker, an unimplemented ExportMyData, a deleted account, a document that
  is not JSON): not retryable. A mail the SMTP server refuses for good (a 5xx) does not fail the
  export: the result says so and the zip stays readable through the API.
- **cancel**: a checkpoint before each service and before the zip is stored: a cancelled job
  stores no zip and mails no one.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiosmtplib
from pydantic import BaseModel, ConfigDict

from aether_common.errors import AetherError, RateLimited, Timeout, Unauthenticated, Unavailable
from aether_common.identity import SERVICE_SUBJECT_PREFIX
from aether_common.mailer import Mailer
from aether_common.postgres import PostgresDatabase, UnitOfWork
from aether_worker import repository
from aether_worker.handler import JobContext, JobFailed, JobType
from aether_worker.records import Job

NAME = "gdpr.export"
ARTIFACT = "export.zip"
# The zip's layout; bumped when a file changes meaning or goes away.
FORMAT_VERSION = 1
# Every service's answer has EXPORT_DEADLINE_S (exports_clients); five of them, the zip, a mail.
TIMEOUT_S = 900.0
SUBJECT = "Your Aether data export is ready"


class ExportParams(BaseModel):
    """No parameters: a user exports their own data."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Exporter(Protocol):
    """One service's ExportMyData, as the job sees it (exports_clients.ExportClient)."""

    async def export(self, *, user_id: str, service: str, token: str) -> str: ...


class Identity(Protocol):
    """The worker's own identity (aether_common.service_tokens.ServiceCredentials)."""

    client_id: str

    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True)
class ExportMail:
    """How the link reaches the user: the mailer (WORKER_SMTP_*, WORKER_MAIL_FROM) and the
    public gateway's base URL (WORKER_PUBLIC_URL) the link starts with."""

    mailer: Mailer
    public_url: str

    def link(self, job_id: str) -> str:
        return f"{self.public_url.rstrip('/')}/api/jobs/{job_id}"

    def body(self, job_id: str) -> str:
        return (
            "Hello,\n\n"
            "the export of your Aether data you asked for is ready. Open the link below while "
            "signed in to download it (export.zip):\n\n"
            f"{self.link(job_id)}\n\n"
            "The download itself expires 15 minutes after you open the page; open it again "
            "for a fresh one. The export is kept as long as the job (30 days by default).\n\n"
            "If you did not ask for it, change your password and contact support.\n"
        )


# -- the documents ---------------------------------------------------------------------------------
def counts(document: Any) -> dict[str, int]:
    """The number of entries of each list at the document's top level and one level down
    (`{"conversations": 3, "user.sessions": 2}`): what the manifest shows per service."""
    found: dict[str, int] = {}
    if not isinstance(document, dict):
        return found
    for key, value in document.items():
        if isinstance(value, list):
            found[key] = len(value)
        elif isinstance(value, dict):
            for inner, item in value.items():
                if isinstance(item, list):
                    found[f"{key}.{inner}"] = len(item)
    return found


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def worker_document(owner_id: str, jobs: list[Job]) -> dict[str, Any]:
    """The worker's own record of the user's jobs (S3 keys left out: the bucket is private)."""
    return {
        "service": "worker",
        "version": FORMAT_VERSION,
        "exported_at": _iso(datetime.now(UTC)),
        "user_id": owner_id,
        "jobs": [
            {
                "id": str(job.id),
                "type": job.type,
                "params": job.params,
                "status": job.status.value,
                "progress": job.progress,
                "progress_message": job.progress_message,
                "attempts": job.attempts,
                "result": job.result,
                "error": {"code": job.error_code, "message": job.error_message}
                if job.error_code
                else None,
                "artifacts": [
                    {"name": a.name, "content_type": a.content_type, "size": a.size}
                    for a in job.artifacts
                ],
                "created_at": _iso(job.created_at),
                "started_at": _iso(job.started_at),
                "finished_at": _iso(job.finished_at),
                "expires_at": _iso(job.expires_at),
            }
            for job in jobs
        ],
    }


@dataclass(frozen=True)
class Part:
    """One service's document: its bytes as the service wrote them, and what they hold."""

    service: str
    data: bytes
    document: Any

    def summary(self) -> dict[str, Any]:
        version = self.document.get("version") if isinstance(self.document, dict) else None
        return {
            "file": f"{self.service}.json",
            "version": version,
            "bytes": len(self.data),
            "counts": counts(self.document),
        }


def build_zip(parts: list[Part], *, job_id: str, owner_id: str) -> tuple[bytes, dict[str, Any]]:
    """`export.zip` and its manifest: one `<service>.json` per part plus `manifest.json`."""
    manifest = {
        "format": "aether.gdpr_export",
        "version": FORMAT_VERSION,
        "job_id": job_id,
        "user_id": owner_id,
        "created_at": _iso(datetime.now(UTC)),
        "services": {part.service: part.summary() for part in parts},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for part in parts:
            archive.writestr(f"{part.service}.json", part.data)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return buffer.getvalue(), manifest


# -- the job ---------------------------------------------------------------------------------------
class GdprExport:
    def __init__(
        self,
        exporters: Mapping[str, Exporter],
        identity: Identity,
        database: PostgresDatabase,
        mail: ExportMail,
    ) -> None:
        if "auth" not in exporters:
            raise ValueError("gdpr.export needs auth's export (the address the link goes to)")
        self._exporters = dict(exporters)
        self._identity = identity
        self._db = database
        self._mail = mail

    async def run(self, ctx: JobContext, params: ExportParams) -> dict[str, Any]:
        owner = ctx.owner_id
        if owner.startswith(SERVICE_SUBJECT_PREFIX):
            raise JobFailed(
                "not_a_user",
                f"gdpr.export exports a user's data; this job's owner is {owner}",
                retryable=False,
            )
        steps = len(self._exporters) + 2  # every service, the worker's own part, the zip
        parts: list[Part] = []
        for done, service in enumerate(self._exporters):
            await ctx.progress(100 * done // steps, f"exporting from {service}")
            parts.append(await self._part(service, owner))
        await ctx.progress(100 * len(parts) // steps, "exporting from worker")
        async with self._db.connection() as conn:
            jobs = await repository.owner_jobs(conn, owner)
        own = worker_document(owner, jobs)
        parts.append(Part("worker", json.dumps(own, indent=2).encode(), own))

        await ctx.progress(100 * len(parts) // steps, f"writing {ARTIFACT}")
        data, manifest = build_zip(parts, job_id=ctx.job_id, owner_id=owner)
        await ctx.checkpoint()  # cancelled by now: no zip stored, no mail
        await ctx.put_artifact(ARTIFACT, data, "application/zip")

        email = self._email(parts[0])
        await ctx.progress(99, "mailing the link")
        mail = await self._send_once(ctx.job_id, email)
        return {
            "artifact": ARTIFACT,
            "zip_bytes": len(data),
            "format_version": FORMAT_VERSION,
            "services": manifest["services"],
            "mail": mail,
        }

    async def _part(self, service: str, owner: str) -> Part:
        try:
            token = await self._identity.token()
            text = await self._exporters[service].export(
                user_id=owner, service=self._identity.client_id, token=token
            )
        except AetherError as exc:
            raise self._failed(service, exc) from exc
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise JobFailed(
                "bad_export", f"{service}: its export is not JSON ({exc})", retryable=False
            ) from exc
        return Part(service, text.encode(), document)

    def _failed(self, service: str, exc: AetherError) -> JobFailed:
        message = f"{service}: {exc.detail}"
        if isinstance(exc, Unauthenticated):
            if exc.error_code == "account_deleted":  # nothing left to export
                return JobFailed(exc.error_code, message, retryable=False)
            # The worker's token was refused (keys rotated): fetch a fresh one next time.
            self._identity.invalidate()
            return JobFailed(exc.error_code, message)
        away = isinstance(exc, Unavailable | Timeout | RateLimited) or exc.http_status >= 500
        if away and exc.http_status != 501:  # UNIMPLEMENTED is a refusal: that service has none
            return JobFailed(f"{service}_unavailable", message)
        return JobFailed(exc.error_code, message, retryable=False)

    @staticmethod
    def _email(auth: Part) -> str:
        user = auth.document.get("user") if isinstance(auth.document, dict) else None
        email = user.get("email") if isinstance(user, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise JobFailed("no_email", "auth's export names no email address", retryable=False)
        return email

    async def _send_once(self, job_id: str, to: str) -> dict[str, Any]:
        """Mails the link unless an attempt already did (export_mails: module docstring)."""

        def send(uow: UnitOfWork) -> Awaitable[bool]:
            return self._mail_in(uow, job_id, to)

        try:
            sent = await self._db.transaction(send)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:  # refused for good (a bad address): the export still stands
                return {"sent": False, "to": to, "error": f"{exc.code} {exc.message}"}
            raise JobFailed("mail_unavailable", f"mail: {exc.code} {exc.message}") from exc
        except (OSError, aiosmtplib.SMTPException) as exc:
            raise JobFailed("mail_unavailable", f"mail: {exc}") from exc
        return {"sent": True, "to": to, "link": self._mail.link(job_id), "this_attempt": sent}

    async def _mail_in(self, uow: UnitOfWork, job_id: str, to: str) -> bool:
        if not await repository.mark_export_mail(uow.conn, uuid.UUID(job_id), to):
            return False  # an earlier attempt mailed it
        await self._mail.mailer.send(to, SUBJECT, self._mail.body(job_id))
        return True


def gdpr_export_job(
    exporters: Mapping[str, Exporter],
    identity: Identity,
    database: PostgresDatabase,
    mail: ExportMail,
    *,
    concurrency: int = 2,
) -> JobType:
    """The `gdpr.export` job type: users submit it (one at a time per user is the plan quota's
    business); `exporters` by service name, auth's required (the address the link goes to)."""
    handler = GdprExport(exporters, identity, database, mail)
    return JobType(
        name=NAME,
        params=ExportParams,
        run=handler.run,
        user_may_submit=True,
        max_attempts=5,
        concurrency=concurrency,
        timeout_s=TIMEOUT_S,
    )
