"""The `chart.render` job: its parameters refused before submit with the field named, and the job
against a real charts service (in-process, PostgreSQL and S3): the answer's URL serves the PNG
charts drew, the same request again finds it stored, charts' refusals fail the job for good and
charts away is retried."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from aether_worker.candles import ChartsClient, Token
from aether_worker.equity_chart import PNG_MAGIC
from aether_worker.handler import JobCancelled, JobFailed
from aether_worker.render import RenderParams, render_job

NOWHERE = "127.0.0.1:9"


def params(**fields: Any) -> RenderParams:
    return RenderParams.model_validate({"symbol": "GOOG", **fields})


@pytest.mark.parametrize(
    ("fields", "loc", "says"),
    [
        ({"symbol": ""}, ("symbol",), "pattern"),
        ({"interval": "3d"}, ("interval",), "'1d'"),
        ({"limit": 2001}, ("limit",), "less than or equal to 2000"),
        ({"limit": -1}, ("limit",), "greater than or equal to 0"),
        ({"width": 199}, ("width",), "0 (the default) or 200-3000 pixels"),
        ({"height": 3001}, ("height",), "200-3000 pixels"),
        ({"style": "neon"}, ("style",), "'yahoo'"),
        ({"overlays": "sma:20,ema:50,rsi,macd,bbands,atr"}, ("overlays",), "at most 5"),
        ({"overlays": "sma(20)"}, ("overlays",), "'sma(20)' is not an indicator"),
        ({"from": "2012-01-01", "to": "2011-01-01"}, ("to",), "not be before from"),
        ({"colour": "red"}, ("colour",), "Extra inputs"),
    ],
)
def test_a_refusal_names_its_field(fields: dict[str, Any], loc: tuple[str, ...], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        params(**fields)
    errors = caught.value.errors()
    assert [tuple(e["loc"]) for e in errors] == [loc]
    assert says in errors[0]["msg"]


def test_the_request_carries_every_field() -> None:
    request = params(
        symbol="goog",
        interval="1w",
        limit=100,
        overlays=" SMA:20 , bbands:20:2 ",
        width=800,
        height=600,
        style="charles",
        **{"from": "2010-01-01", "to": "2012-01-01T00:00:00-05:00"},
    ).request()

    assert (request.symbol, request.interval, request.limit) == ("GOOG", "1w", 100)
    assert request.overlays == "sma:20,bbands:20:2"
    assert (request.width, request.height, request.style) == (800, 600, "charles")
    assert getattr(request, "from").ToDatetime(tzinfo=UTC) == datetime(2010, 1, 1, tzinfo=UTC)
    assert request.to.ToDatetime(tzinfo=UTC) == datetime(2012, 1, 1, 5, tzinfo=UTC)


def test_defaults_leave_the_choice_to_charts() -> None:
    request = params().request()

    assert (request.interval, request.limit, request.width, request.height) == ("", 0, 0, 0)
    assert (request.style, request.overlays) == ("", "")
    assert not request.HasField("from")
    assert not request.HasField("to")


@pytest.fixture
async def charts(charts_service: Any, worker_token: Token) -> AsyncIterator[ChartsClient]:
    client = ChartsClient(charts_service.address, timeout_s=30, token=worker_token)
    await client.start()
    yield client
    await client.stop()


async def test_a_chart_is_rendered_and_then_found_stored(
    charts: ChartsClient, job_context: Any
) -> None:
    job = render_job(charts)
    request = params(
        interval="1w",
        overlays="sma:10",
        width=640,
        height=400,
        **{"from": "2010-01-01", "to": "2011-01-01"},
    )
    before = datetime.now(UTC)
    first = await job.run(job_context(), request)
    again = await job.run(job_context(), request)

    assert set(first) == {"url", "expires_at", "key", "cached"}
    assert first["cached"] is False
    assert again["cached"] is True
    assert again["key"] == first["key"]
    assert first["key"].startswith("charts/v1/GOOG/1w/")
    expires = datetime.fromisoformat(first["expires_at"])
    assert before + timedelta(minutes=14) < expires < before + timedelta(minutes=16)
    async with httpx.AsyncClient() as http:
        answer = await http.get(first["url"])
    assert answer.status_code == 200
    png = answer.content
    assert png.startswith(PNG_MAGIC)
    assert struct.unpack(">II", png[16:24]) == (640, 400)


async def test_an_unknown_symbol_fails_for_good(charts: ChartsClient, job_context: Any) -> None:
    with pytest.raises(JobFailed) as caught:
        await render_job(charts).run(job_context(), params(symbol="NOPE"))
    assert (caught.value.code, caught.value.retryable) == ("unknown_symbol", False)


async def test_what_charts_refuses_fails_for_good(charts: ChartsClient, job_context: Any) -> None:
    # Well formed here, but charts knows no such indicator.
    with pytest.raises(JobFailed) as caught:
        await render_job(charts).run(job_context(), params(overlays="wobble:3"))
    assert (caught.value.code, caught.value.retryable) == ("invalid_params", False)
    assert "wobble" in caught.value.message


async def test_charts_away_is_retried(worker_token: Token, job_context: Any) -> None:
    client = ChartsClient(NOWHERE, timeout_s=5, token=worker_token)
    await client.start()
    try:
        with pytest.raises(JobFailed) as caught:
            await render_job(client).run(job_context(), params())
    finally:
        await client.stop()
    assert (caught.value.code, caught.value.retryable) == ("charts_unavailable", True)


async def test_a_cancelled_job_does_not_call_charts(worker_token: Token, job_context: Any) -> None:
    # Nothing listens at NOWHERE: a call would fail as unavailable, not as cancelled.
    client = ChartsClient(NOWHERE, timeout_s=5, token=worker_token)
    await client.start()
    try:
        with pytest.raises(JobCancelled):
            await render_job(client).run(job_context(cancel_at=1), params())
    finally:
        await client.stop()


def test_the_job_type() -> None:
    job = render_job(ChartsClient(NOWHERE, timeout_s=5, token=_never))
    assert (job.name, job.params, job.user_may_submit) == ("chart.render", RenderParams, True)
    assert job.runs(params()) == 1


async def _never() -> str:
    raise AssertionError("no call is made")
