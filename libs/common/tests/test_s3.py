"""The S3 bucket component against the real S3-API server the devstack plugin starts (moto_server
natively, MinIO in containers): the bucket made at start, objects in and out, a missing key, a
presigned link fetched like a browser would, a streamed multipart upload, outages; and the
settings a service with a bucket reads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from botocore.exceptions import ClientError
from pydantic_settings import SettingsConfigDict

from aether_common import outages
from aether_common.errors import NotFound, Unavailable
from aether_common.s3 import MIN_PART_SIZE, S3Bucket, S3Settings
from aether_common.settings import SettingsError, load_settings
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import unique_name


def make_bucket(endpoints: Endpoints, name: str, *, create: bool = True) -> S3Bucket:
    return S3Bucket(
        name,
        service="test",
        endpoint_url=endpoints.s3_endpoint,
        access_key=endpoints.s3_access_key,
        secret_key=endpoints.s3_secret_key,
        create=create,
    )


@pytest.fixture
async def bucket(aether_endpoints: Endpoints) -> AsyncIterator[S3Bucket]:
    bucket = make_bucket(aether_endpoints, unique_name("aether-t-"))
    await bucket.start()
    yield bucket
    await bucket.stop()


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_start_creates_the_missing_bucket_and_a_second_replica_finds_it(
    aether_endpoints: Endpoints,
) -> None:
    name = unique_name("aether-t-")
    first, second = make_bucket(aether_endpoints, name), make_bucket(aether_endpoints, name)
    try:
        assert not await first.ready()  # no bucket yet
        await asyncio.gather(first.start(), second.start())
        assert await first.ready()
        assert await second.ready()
    finally:
        await first.stop()
        await second.stop()


async def test_a_missing_bucket_stops_the_start_where_it_is_not_created(
    aether_endpoints: Endpoints,
) -> None:
    bucket = make_bucket(aether_endpoints, unique_name("aether-t-"), create=False)
    try:
        with pytest.raises(ClientError):  # a deploy mistake, not an outage
            await bucket.start()
        assert not await bucket.ready()
    finally:
        await bucket.stop()


async def test_put_get_exists_delete_round_trip(bucket: S3Bucket) -> None:
    data = bytes(range(256)) * 4
    await bucket.put("charts/a b/ü.png", data, content_type="image/png")
    assert await bucket.get("charts/a b/ü.png") == data
    assert await bucket.exists("charts/a b/ü.png")

    await bucket.put("charts/a b/ü.png", b"replaced")
    assert await bucket.get("charts/a b/ü.png") == b"replaced"

    await bucket.delete("charts/a b/ü.png")
    assert not await bucket.exists("charts/a b/ü.png")
    await bucket.delete("charts/a b/ü.png")  # already gone: not an error


async def test_a_missing_key_is_not_found(bucket: S3Bucket) -> None:
    with pytest.raises(NotFound, match="nothing/here"):
        await bucket.get("nothing/here")
    assert not await bucket.exists("nothing/here")


async def test_a_presigned_url_gives_the_bytes_to_anyone_holding_it(bucket: S3Bucket) -> None:
    await bucket.put("export.csv", b"a,b\n1,2\n", content_type="text/csv")
    url = await bucket.presigned_get("export.csv", expires_s=60, filename="my export.csv")

    async with httpx.AsyncClient() as http:  # no credentials: the URL is the permission
        got = await http.get(url)
        assert got.status_code == 200
        assert got.content == b"a,b\n1,2\n"
        assert got.headers["content-type"] == "text/csv"
        assert got.headers["content-disposition"] == 'attachment; filename="my export.csv"'


async def test_presigned_urls_name_the_public_endpoint_when_there_is_one(
    aether_endpoints: Endpoints, bucket: S3Bucket
) -> None:
    # The services reach the store at one address, browsers at another (here: another name of
    # the same server); the URL must be signed for the browsers' host.
    if "//127.0.0.1:" not in aether_endpoints.s3_endpoint:
        pytest.skip("needs a store on 127.0.0.1, reachable as localhost too")
    public = aether_endpoints.s3_endpoint.replace("127.0.0.1", "localhost")
    outside = S3Bucket(
        bucket.bucket,
        service="test",
        endpoint_url=aether_endpoints.s3_endpoint,
        access_key=aether_endpoints.s3_access_key,
        secret_key=aether_endpoints.s3_secret_key,
        public_endpoint_url=public,
    )
    try:
        await outside.put("public.txt", b"seen from outside")
        url = await outside.presigned_get("public.txt", expires_s=60)
        assert url.startswith(f"{public}/")
        async with httpx.AsyncClient() as http:
            got = await http.get(url)
        assert (got.status_code, got.content) == (200, b"seen from outside")
    finally:
        await outside.stop()


async def test_presigned_expiry_is_bounded(bucket: S3Bucket) -> None:
    for expires_s in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="expires_s"):
            await bucket.presigned_get("k", expires_s=expires_s)


async def test_upload_streams_parts_and_a_small_stream_is_one_put(bucket: S3Bucket) -> None:
    big = os.urandom(2 * MIN_PART_SIZE + 12345)  # three parts, the last one short
    await bucket.upload("big.bin", chunks(big, 1 << 20), part_size=MIN_PART_SIZE)
    assert await bucket.get("big.bin") == big

    await bucket.upload("small.bin", chunks(b"tiny" * 10, 7))
    assert await bucket.get("small.bin") == b"tiny" * 10

    await bucket.upload("empty.bin", chunks(b"", 1))
    assert await bucket.get("empty.bin") == b""


async def test_a_failed_stream_leaves_no_object_and_no_upload(bucket: S3Bucket) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(MIN_PART_SIZE)  # one part already sent
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError, match="producer"):
        await bucket.upload("half.bin", broken(), part_size=MIN_PART_SIZE)
    assert not await bucket.exists("half.bin")
    client = await bucket._client()
    pending = await client.list_multipart_uploads(Bucket=bucket.bucket)
    assert pending.get("Uploads", []) == []  # aborted, nothing left to bill


async def test_part_size_below_the_s3_minimum_is_refused(bucket: S3Bucket) -> None:
    with pytest.raises(ValueError, match="part_size"):
        await bucket.upload("x", chunks(b"x", 1), part_size=MIN_PART_SIZE - 1)


async def test_an_outage_is_unavailable_and_readiness_says_so() -> None:
    bucket = S3Bucket(
        "nowhere",
        service="test",
        endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        access_key="k",
        secret_key="s",
        timeout_s=0.5,
        attempts=1,
    )
    try:
        assert not await bucket.ready()
        for call in (
            bucket.start(),
            bucket.put("k", b"v"),
            bucket.get("k"),
            bucket.exists("k"),
            bucket.delete("k"),
        ):
            with pytest.raises(Unavailable) as raised:
                await call
            assert raised.value.retry_after == outages.RETRY_AFTER_S
            assert "test service" in raised.value.detail
        # Signing needs no server.
        assert (await bucket.presigned_get("k", expires_s=60)).startswith("http://127.0.0.1:")
    finally:
        await bucket.stop()


def _client_error(status: int, code: str) -> ClientError:
    response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")


@pytest.mark.parametrize(
    ("status", "code", "failure"),
    [
        (503, "SlowDown", outages.Failure.OUTAGE),
        (500, "InternalError", outages.Failure.OUTAGE),
        (503, "ServiceUnavailable", outages.Failure.OUTAGE),
        (404, "NoSuchKey", None),
        (403, "AccessDenied", None),
        (404, "NoSuchBucket", None),
    ],
)
def test_s3_answers_that_mean_an_outage(
    status: int, code: str, failure: outages.Failure | None
) -> None:
    error = _client_error(status, code)
    assert outages.s3(error) is failure
    assert outages.classify(error) is failure


# -- settings ---------------------------------------------------------------------------------
class ChartsSettings(S3Settings):
    model_config = SettingsConfigDict(env_prefix="CHARTS_")


S3_ENV = (
    "AETHER_ENV",
    "AETHER_S3_ENDPOINT",
    "AETHER_S3_PUBLIC_ENDPOINT",
    "AETHER_S3_REGION",
    "AETHER_S3_ACCESS_KEY",
    "AETHER_S3_SECRET_KEY",
    "AETHER_S3_ADDRESSING_STYLE",
    "CHARTS_S3_BUCKET",
)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_read_the_platform_s3_and_the_service_bucket(s3_env: pytest.MonkeyPatch) -> None:
    s3_env.setenv("AETHER_ENV", "prod")
    s3_env.setenv("AETHER_S3_ENDPOINT", "")  # the chart's value for AWS itself
    s3_env.setenv("AETHER_S3_REGION", "eu-west-1")
    s3_env.setenv("CHARTS_S3_BUCKET", "aether-charts")
    settings = load_settings(ChartsSettings)
    assert settings.s3_bucket == "aether-charts"
    assert settings.s3_endpoint is None
    assert settings.s3_region == "eu-west-1"
    # No keys: the AWS default credential chain (the pod's role).
    assert settings.s3_access_key is None
    bucket = S3Bucket.from_settings(settings, service="charts")
    assert (bucket.bucket, bucket.region, bucket._create) == ("aether-charts", "eu-west-1", False)


def test_settings_require_the_bucket(s3_env: pytest.MonkeyPatch) -> None:
    s3_env.setenv("AETHER_ENV", "dev")
    with pytest.raises(SettingsError, match="missing required setting CHARTS_S3_BUCKET"):
        load_settings(ChartsSettings)


def test_placeholder_keys_are_refused_outside_dev(s3_env: pytest.MonkeyPatch) -> None:
    s3_env.setenv("CHARTS_S3_BUCKET", "aether-charts")
    s3_env.setenv("AETHER_S3_ACCESS_KEY", "dev-only-access-key")
    s3_env.setenv("AETHER_S3_SECRET_KEY", "dev-only-secret-key")
    s3_env.setenv("AETHER_ENV", "dev")
    dev = load_settings(ChartsSettings)
    assert S3Bucket.from_settings(dev, service="charts")._create  # dev makes its bucket
    s3_env.setenv("AETHER_ENV", "staging")
    with pytest.raises(SettingsError, match="AETHER_S3_ACCESS_KEY, AETHER_S3_SECRET_KEY"):
        load_settings(ChartsSettings)


def test_keys_come_in_pairs(s3_env: pytest.MonkeyPatch) -> None:
    s3_env.setenv("AETHER_ENV", "prod")
    s3_env.setenv("CHARTS_S3_BUCKET", "aether-charts")
    s3_env.setenv("AETHER_S3_ACCESS_KEY", "AKIAEXAMPLEREALKEY")
    with pytest.raises(SettingsError, match="both AETHER_S3_ACCESS_KEY and AETHER_S3_SECRET_KEY"):
        load_settings(ChartsSettings)
