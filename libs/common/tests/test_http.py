"""The shared HTTP app: health, readiness, request ids, one error shape, route-labelled metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY
from pydantic import BaseModel

from aether_common.errors import Conflict, RateLimited
from aether_common.http import (
    UNMATCHED_ROUTE,
    NamedCheck,
    ReadinessState,
    create_http_app,
    readiness_of,
)
from aether_common.logging import configure_logging, request_id_var
from aether_devstack.servers import free_port

router = APIRouter()


class Signup(BaseModel):
    email: str
    age: int


@router.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, object]:
    return {"id": item_id, "request_id": request_id_var.get()}


@router.post("/signup")
async def signup(body: Signup) -> dict[str, str]:
    return {"email": body.email}


@router.post("/taken")
async def taken() -> None:
    raise Conflict("email already registered", code="email_taken")


@router.get("/slow-down")
async def slow_down() -> None:
    raise RateLimited("too many requests", retry_after=7)


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("db password is hunter2")


@router.get("/datastore-away")
async def datastore_away() -> None:
    # A real outage: nothing listens on that port (connection refused).
    await asyncpg.connect(f"postgresql://nobody@127.0.0.1:{free_port()}/none", timeout=2)


class FakeComponent:
    name = "consumer"

    def __init__(self, ready: bool) -> None:
        self._ready = ready

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        return self._ready


async def ok() -> bool:
    return True


async def hangs() -> bool:
    await asyncio.sleep(10)
    return True


async def raises() -> bool:
    raise ConnectionRefusedError("connect to 10.0.0.1:5432 failed")


def make_app(**kwargs: Any) -> FastAPI:
    return create_http_app("testsvc", routers=[router], **kwargs)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(checks=[NamedCheck("postgres", ok)]))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "testsvc"}


async def test_readyz_reports_each_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["postgres"]["ok"] is True


async def test_readyz_is_503_when_a_check_fails_times_out_or_raises() -> None:
    app = make_app(
        checks=[
            NamedCheck("postgres", ok),
            NamedCheck("kafka", hangs),
            NamedCheck("redis", raises),
        ],
        components=[FakeComponent(ready=False), FakeComponent(ready=True)],
        check_timeout=0.2,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    checks = body["checks"]
    assert checks["postgres"]["ok"] is True
    assert checks["kafka"] == {
        "ok": False,
        "error": "timed out after 0.2s",
        "duration_ms": checks["kafka"]["duration_ms"],
    }
    # The error class only: the message (an internal address here) stays in the logs.
    assert checks["redis"]["error"] == "ConnectionRefusedError"
    assert "10.0.0.1" not in response.text
    assert checks["consumer"]["ok"] is False
    assert checks["consumer#2"]["ok"] is True  # same name, both reported


async def test_readyz_is_503_while_stopping() -> None:
    app = make_app()
    readiness_of(app).state = ReadinessState.STOPPING
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        response = await c.get("/readyz")
        assert (await c.get("/healthz")).status_code == 200
    assert response.status_code == 503
    assert response.json()["status"] == "stopping"


async def test_request_id_is_kept_bound_and_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/1", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"


async def test_request_id_is_made_when_missing_or_insane(client: httpx.AsyncClient) -> None:
    made = await client.get("/items/1")
    assert len(made.headers["x-request-id"]) == 32
    insane = await client.get("/items/1", headers={"X-Request-ID": "x" * 500})
    assert insane.headers["x-request-id"] != "x" * 500
    assert insane.json()["request_id"] == insane.headers["x-request-id"]
    assert request_id_var.get() is None  # nothing leaks out of the request


async def test_domain_error_keeps_its_status_code_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/taken")
    assert response.status_code == 409
    assert response.json() == {
        "error": "email_taken",
        "detail": "email already registered",
        "status_code": 409,
    }
    limited = await client.get("/slow-down")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"


async def test_validation_error_is_400_naming_the_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/signup", json={"age": "old"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "validation"
    assert body["status_code"] == 400
    assert "body.email: field required" in body["detail"]
    assert "body.age: input should be a valid integer" in body["detail"]


async def test_bad_path_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/abc")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("path.item_id: ")


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/signup", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "validation"
    assert body["detail"].startswith("malformed JSON in request body")


async def test_unknown_route_and_wrong_method_use_the_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "Not Found", "status_code": 404}
    wrong = await client.delete("/signup")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


@pytest.fixture
def structured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[Any]]]:
    """Aether's logging set up; yields a reader of the structlog event dicts logged so far."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("testsvc")
    root.addHandler(caplog.handler)
    yield lambda: [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


async def test_unhandled_error_is_a_generic_500_logged_not_leaked(
    client: httpx.AsyncClient, structured_logs: Callable[[], list[Any]]
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal",
        "detail": "internal server error",
        "status_code": 500,
    }
    assert "hunter2" not in response.text
    assert response.headers["x-request-id"] == "req-boom"
    [event] = [e for e in structured_logs() if e["event"] == "unhandled error"]
    assert event["request_id"] == "req-boom"
    assert event["level"] == "error"
    assert "RuntimeError: db password is hunter2" in event["exception"]


async def test_a_datastore_outage_in_a_route_is_a_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/datastore-away")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": "unavailable",
        "detail": "a datastore is unavailable; retry",
        "status_code": 503,
    }


def sample(route: str, status: str, method: str = "GET") -> float:
    value = REGISTRY.get_sample_value(
        "aether_http_requests_total", {"method": method, "route": route, "status": status}
    )
    return value or 0.0


async def test_metrics_are_labelled_by_route_template(client: httpx.AsyncClient) -> None:
    before = sample("/items/{item_id}", "200")
    before_unmatched = sample(UNMATCHED_ROUTE, "404")
    before_boom = sample("/boom", "500")
    await client.get("/items/41")
    await client.get("/items/42")
    await client.get("/random/path/123")
    await client.get("/boom")
    assert sample("/items/{item_id}", "200") == before + 2
    assert sample(UNMATCHED_ROUTE, "404") == before_unmatched + 1
    assert sample("/boom", "500") == before_boom + 1
    exposition = (await client.get("/metrics")).text
    assert 'route="/items/{item_id}"' in exposition
    assert "/items/41" not in exposition
    assert "/random/path/123" not in exposition
