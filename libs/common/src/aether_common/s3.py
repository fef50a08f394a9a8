"""One S3 bucket as a lifecycle Component (aiobotocore): objects in and out, presigned links.

    class ChartsSettings(S3Settings): ...                # AETHER_S3_* + CHARTS_S3_BUCKET
    bucket = S3Bucket.from_settings(settings, service="charts")
    await bucket.put("a/b.png", data, content_type="image/png")
    url = await bucket.presigned_get("a/b.png", expires_s=600)   # a browser fetches it

- The client connects lazily, like the MongoDB and Redis components: `ready()` and every call
  work before `start()`, which checks the bucket (and creates it in dev and test).
- A missing object is `NotFound`. An outage (refused, timed out, 5xx, SlowDown once botocore's
  own retries are spent) is `Unavailable` with Retry-After, by `outages.s3`; any other error
  (a denied key, a missing bucket) stays what botocore raised: a bug or a deploy mistake.
- `upload` streams an object of any size in parts, holding one part in memory.
- Credentials: a key pair, or none for the AWS default chain (the pod's IAM role). A placeholder
  secret is refused outside dev by `AetherSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Iterator
from typing import Any, Literal, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from aether_common import outages
from aether_common.errors import NotFound
from aether_common.settings import AetherSettings, Environment

# S3 refuses parts under 5 MiB (all but the last) and more than 10,000 parts per object.
MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
AddressingStyle = Literal["auto", "path", "virtual"]


class S3Settings(AetherSettings):
    """Settings of a service with a bucket. The server and the keys are platform-wide
    (`AETHER_S3_*`, the chart's ConfigMap and secrets); the bucket is the service's own
    (`<PREFIX>S3_BUCKET`)."""

    s3_bucket: str
    # Empty or unset: AWS's own endpoint for the region.
    s3_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("AETHER_S3_ENDPOINT")
    )
    # Where browsers reach the store when it differs from the services' endpoint (an in-cluster
    # MinIO behind an ingress); presigned URLs are signed for this host.
    s3_public_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("AETHER_S3_PUBLIC_ENDPOINT")
    )
    s3_region: str = Field(default="us-east-1", validation_alias=AliasChoices("AETHER_S3_REGION"))
    s3_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AETHER_S3_ACCESS_KEY")
    )
    s3_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AETHER_S3_SECRET_KEY")
    )
    # MinIO wants "path"; AWS prefers virtual-hosted buckets ("auto" picks per endpoint).
    s3_addressing_style: AddressingStyle = Field(
        default="auto", validation_alias=AliasChoices("AETHER_S3_ADDRESSING_STYLE")
    )
    s3_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("s3_endpoint", "s3_public_endpoint")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> Self:
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError(
                "set both AETHER_S3_ACCESS_KEY and AETHER_S3_SECRET_KEY, or neither "
                "(the AWS default credentials)"
            )
        return self


class S3Bucket:
    """Component: one bucket of `service`. `create` makes the bucket at start when it is
    missing (dev and test: production buckets come from Terraform)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        service: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        public_endpoint_url: str | None = None,
        addressing_style: AddressingStyle = "auto",
        create: bool = False,
        timeout_s: float = 5.0,
        attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.service = service
        self.region = region
        self._create = create
        self._client_args: dict[str, Any] = {
            "region_name": region,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            # Short timeouts and few tries, so an outage fails calls fast instead of stalling.
            "config": AioConfig(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": attempts, "mode": "standard"},
                s3={"addressing_style": addressing_style},
                # Presigned URLs in SigV4 (X-Amz-Expires): botocore would otherwise presign S3
                # in the legacy query form (SigV2), which buckets made since 2020 refuse.
                signature_version="s3v4",
            ),
        }
        self._endpoints = {"calls": endpoint_url, "presign": public_endpoint_url}
        # A second client only when browsers reach the store elsewhere: SigV4 signs the host.
        self._presigner = "presign" if public_endpoint_url not in (None, endpoint_url) else "calls"
        self._clients: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: S3Settings, *, service: str) -> S3Bucket:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return cls(
            settings.s3_bucket,
            service=service,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=secret(settings.s3_access_key),
            secret_key=secret(settings.s3_secret_key),
            public_endpoint_url=settings.s3_public_endpoint,
            addressing_style=settings.s3_addressing_style,
            create=settings.environment in (Environment.DEV, Environment.TEST),
            timeout_s=settings.s3_timeout_s,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        with self._mapped():
            client = await self._client()
            try:
                await client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if not (self._create and _code(exc) in _MISSING_CODES):
                    raise
                await self._create_bucket(client)

    async def stop(self) -> None:
        async with self._lock:
            await self._stack.aclose()
            self._clients.clear()

    async def ready(self) -> bool:
        try:
            await (await self._client()).head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):
            return False
        return True

    # -- objects ------------------------------------------------------------------------------
    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        with self._mapped():
            await (await self._client()).put_object(
                Bucket=self.bucket, Key=key, Body=data, **_content_type(content_type)
            )

    async def get(self, key: str) -> bytes:
        """The object's bytes; `NotFound` when there is no such key."""
        with self._mapped(key):
            response = await (await self._client()).get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    async def exists(self, key: str) -> bool:
        with self._mapped():
            try:
                await (await self._client()).head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return False
                raise
            return True

    async def delete(self, key: str) -> None:
        """Remove the object; a key that is already gone is not an error (S3's own rule)."""
        with self._mapped():
            await (await self._client()).delete_object(Bucket=self.bucket, Key=key)

    async def presigned_get(self, key: str, *, expires_s: int, filename: str | None = None) -> str:
        """A URL anyone holding it may GET the object with, until `expires_s` seconds pass.
        Signed here, no call to the store (it does not check that the key exists). `filename`
        makes browsers save it under that name."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be within 1..{MAX_PRESIGN_S}, not {expires_s}")
        params = {"Bucket": self.bucket, "Key": key}
        if filename is not None:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        with self._mapped():
            url: str = await (await self._client(self._presigner)).generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_s
            )
            return url

    async def upload(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        """Store an object of any size from a stream, one `part_size` part in memory at a time
        (a multipart upload; one PUT when it all fits in one part). A failure aborts the
        upload, so no parts are left behind to be billed."""
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        buffer = bytearray()
        upload = _Multipart(self, key, content_type)
        with self._mapped():
            try:
                async for chunk in chunks:
                    buffer += chunk
                    while len(buffer) >= part_size:
                        await upload.part(bytes(buffer[:part_size]))
                        del buffer[:part_size]
                if upload.upload_id is None:
                    await self.put(key, bytes(buffer), content_type=content_type)
                    return
                if buffer:
                    await upload.part(bytes(buffer))
                await upload.complete()
            except BaseException:
                await upload.abort()
                raise

    # -- inside -------------------------------------------------------------------------------
    async def _client(self, purpose: str = "calls") -> Any:
        client = self._clients.get(purpose)
        if client is not None:
            return client
        async with self._lock:  # two first calls at once open one client
            if purpose not in self._clients:
                creator = get_session().create_client(
                    "s3", endpoint_url=self._endpoints[purpose], **self._client_args
                )
                self._clients[purpose] = await self._stack.enter_async_context(creator)
            return self._clients[purpose]

    async def _create_bucket(self, client: Any) -> None:
        # us-east-1 is the one region S3 refuses to be named in.
        where = (
            {}
            if self.region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
        )
        try:
            await client.create_bucket(Bucket=self.bucket, **where)
        except ClientError as exc:
            # Another replica made it between our check and our create.
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    @contextlib.contextmanager
    def _mapped(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            if key is not None and isinstance(exc, ClientError) and _code(exc) in _MISSING_CODES:
                raise NotFound(f"no object {key!r} in bucket {self.bucket!r}") from exc
            if outages.s3(exc) is not None:
                unavailable = outages.as_unavailable(exc, self.service)
                assert unavailable is not None
                raise unavailable from exc
            raise


class _Multipart:
    """One multipart upload, begun at its first part."""

    def __init__(self, bucket: S3Bucket, key: str, content_type: str | None) -> None:
        self._bucket = bucket
        self._where = {"Bucket": bucket.bucket, "Key": key}
        self._content_type = content_type
        self.upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def part(self, data: bytes) -> None:
        client = await self._bucket._client()
        if self.upload_id is None:
            begun = await client.create_multipart_upload(
                **self._where, **_content_type(self._content_type)
            )
            self.upload_id = begun["UploadId"]
        number = len(self._parts) + 1
        sent = await client.upload_part(
            **self._where, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    async def complete(self) -> None:
        await (await self._bucket._client()).complete_multipart_upload(
            **self._where, UploadId=self.upload_id, MultipartUpload={"Parts": self._parts}
        )

    async def abort(self) -> None:
        if self.upload_id is None:
            return
        # Best effort: the store may be the reason we are here. A lifecycle rule on the bucket
        # (AbortIncompleteMultipartUpload) sweeps what this leaves.
        with contextlib.suppress(BotoCoreError, ClientError):
            await (await self._bucket._client()).abort_multipart_upload(
                **self._where, UploadId=self.upload_id
            )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _content_type(content_type: str | None) -> dict[str, str]:
    return {} if content_type is None else {"ContentType": content_type}
