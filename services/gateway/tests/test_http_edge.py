"""The HTTP edge: one error shape for every bad input, body limits, security headers, CORS, gzip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

LOGIN = "/api/auth/login"
ORIGIN = "https://app.aether.test"


async def test_a_declared_body_over_the_limit_is_413(
    start_gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    gateway = await start_gateway(max_body_bytes=100)

    response = await gateway.post(LOGIN, json={"email": "a@b.co", "password": "x" * 200})

    assert "larger than the 100 bytes" in error_shape(response, 413, "payload_too_large")
    assert fake_auth.calls_to("Login") == []


async def test_a_chunked_body_over_the_limit_is_413(
    start_gateway: Any, fake_auth: Any, error_shape: Callable[..., str]
) -> None:
    gateway = await start_gateway(max_body_bytes=100)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@b.co", "password": "'
        for _ in range(10):
            yield b"x" * 50
        yield b'"}'

    response = await gateway.post(
        LOGIN, content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in response.request.headers  # really chunked
    assert "larger than the 100 bytes" in error_shape(response, 413, "payload_too_large")
    assert fake_auth.calls_to("Login") == []


async def test_a_body_under_the_limit_passes(start_gateway: Any, fake_auth: Any) -> None:
    gateway = await start_gateway(max_body_bytes=100)

    response = await gateway.post(LOGIN, json={"email": "a@b.co", "password": "pw"})

    assert response.status_code == 200, response.text


async def test_malformed_json_is_400(gateway: Any, error_shape: Callable[..., str]) -> None:
    response = await gateway.post(
        LOGIN, content=b'{"email": "a@b.co",', headers={"Content-Type": "application/json"}
    )

    assert "malformed JSON" in error_shape(response, 400, "validation")


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"email": "a@b.co", "password": "pw", "admin": True}, "body.admin: extra inputs"),
        ({"email": 12345, "password": "pw"}, "body.email: input should be a valid string"),
        ({"email": "a@b.co", "password": 12345}, "body.password"),
        ({"email": "a@b.co"}, "body.password: field required"),
        ({"email": "not-an-email", "password": "pw"}, "body.email"),
        ({"email": "a@b.co", "password": "x" * 300}, "body.password: string should have at most"),
        ([], "body: input should be a valid dictionary"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    gateway: Any, fake_auth: Any, error_shape: Callable[..., str], body: Any, names: str
) -> None:
    response = await gateway.post(LOGIN, json=body)

    assert names in error_shape(response, 400, "validation")
    assert fake_auth.calls_to("Login") == []


async def test_strict_types_refuse_coercion(
    gateway: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    # "true" is not a bool, 1 is not a string: a strict API says so instead of guessing.
    response = await gateway.post(
        "/api/auth/login/mfa", json={"challenge_token": "c", "totp_code": 123456}
    )

    assert "body.totp_code" in error_shape(response, 400, "validation")


@pytest.mark.parametrize(
    "body",
    [
        {"challenge_token": "c"},
        {"challenge_token": "c", "totp_code": "123456", "recovery_code": "abcd-efgh"},
    ],
)
async def test_exactly_one_mfa_code(
    gateway: Any, error_shape: Callable[..., str], body: dict[str, str]
) -> None:
    response = await gateway.post("/api/auth/login/mfa", json=body)

    assert "exactly one of totp_code or recovery_code" in error_shape(response, 400, "validation")


async def test_unknown_route_and_wrong_method_answer_in_the_shape(
    gateway: Any, error_shape: Callable[..., str]
) -> None:
    missing = await gateway.get("/api/nothing/here")
    wrong_method = await gateway.get(LOGIN)

    error_shape(missing, 404, "not_found")
    error_shape(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["Allow"] == "POST"


async def test_bad_path_and_query_parameters_are_400(
    gateway: Any, error_shape: Callable[..., str]
) -> None:
    provider = await gateway.get("/api/auth/oauth/Bad%20Name/start")
    redirect = await gateway.get("/api/auth/oauth/github/start", params={"redirect": "maybe"})

    assert "path.provider" in error_shape(provider, 400, "validation")
    assert "query.redirect" in error_shape(redirect, 400, "validation")


async def test_security_headers_on_every_answer(gateway: Any) -> None:
    for response in (
        await gateway.get("/api/auth/jwks"),
        await gateway.get("/nope"),
        await gateway.post(LOGIN, json={}),
    ):
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "server" not in headers
        assert "Strict-Transport-Security" not in headers  # plain http: HSTS means nothing


async def test_hsts_over_https(start_gateway: Any) -> None:
    gateway = await start_gateway(base_url="https://gateway.test")

    response = await gateway.get("/health")

    assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


async def test_auth_answers_are_not_cached(gateway: Any, token: Callable[..., str]) -> None:
    response = await gateway.get("/api/auth/me", headers={"Authorization": f"Bearer {token()}"})

    assert response.headers["Cache-Control"] == "no-store"


async def test_cors_preflight_for_an_allowed_origin(start_gateway: Any) -> None:
    gateway = await start_gateway(cors_origins=[ORIGIN])

    response = await gateway.options(
        LOGIN,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_cors_preflight_for_another_origin_is_refused_in_the_shape(
    start_gateway: Any, error_shape: Callable[..., str]
) -> None:
    gateway = await start_gateway(cors_origins=[ORIGIN])

    response = await gateway.options(
        LOGIN,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )

    assert "origin" in error_shape(response, 400, "cors_refused")
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_lets_browsers_read_the_rate_limit_headers(start_gateway: Any) -> None:
    gateway = await start_gateway(cors_origins=[ORIGIN])

    response = await gateway.get("/api/auth/jwks", headers={"Origin": ORIGIN})

    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = response.headers["Access-Control-Expose-Headers"]
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "Retry-After", "X-Request-ID"):
        assert name in exposed


async def test_large_answers_are_gzipped(gateway: Any) -> None:
    response = await gateway.get("/openapi.json", headers={"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.json()["info"]["title"] == "Aether API"  # httpx decoded it


async def test_answers_say_they_vary_by_origin_and_encoding(start_gateway: Any) -> None:
    gateway = await start_gateway(cors_origins=[ORIGIN])

    plain = await gateway.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    gzipped = await gateway.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    from_browser = await gateway.get(
        "/openapi.json", headers={"Accept-Encoding": "gzip", "Origin": ORIGIN}
    )

    def vary(response: Any) -> list[str]:
        return [v.strip() for v in response.headers["Vary"].split(",")]

    assert "Content-Encoding" not in plain.headers
    assert vary(plain) == ["Origin"]
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert sorted(vary(gzipped)) == ["Accept-Encoding", "Origin"]
    assert from_browser.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert sorted(vary(from_browser)) == ["Accept-Encoding", "Origin"]


async def test_small_answers_are_not(gateway: Any) -> None:
    response = await gateway.get("/health", headers={"Accept-Encoding": "gzip"})

    assert "Content-Encoding" not in response.headers


async def test_request_id_in_and_out(gateway: Any) -> None:
    given = await gateway.get("/health", headers={"X-Request-ID": "req-123"})
    made = await gateway.get("/health")
    hostile = await gateway.get("/health", headers={"X-Request-ID": "x" * 500})

    assert given.headers["X-Request-ID"] == "req-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert hostile.headers["X-Request-ID"] != "x" * 500


async def test_openapi_docs_are_served(gateway: Any) -> None:
    docs = await gateway.get("/docs")
    spec = (await gateway.get("/openapi.json")).json()

    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert "https://cdn.jsdelivr.net" in docs.headers["Content-Security-Policy"]
    assert "/api/auth/login" in spec["paths"]
    assert "/api/admin/users/{user_id}/access" in spec["paths"]


async def test_health_and_status(gateway: Any) -> None:
    health = await gateway.get("/health")
    status = await gateway.get("/api/status")

    assert health.json() == {"status": "ok"}
    body = status.json()
    assert status.status_code == 200, body
    assert body["status"] == "ok"
    assert body["dependencies"]["auth"]["ok"] is True
    assert body["dependencies"]["redis"]["ok"] is True


async def test_status_reports_a_dependency_down(start_gateway: Any) -> None:
    gateway = await start_gateway(auth_grpc_target="127.0.0.1:1")

    response = await gateway.get("/api/status")

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "degraded"
    assert body["dependencies"]["auth"]["ok"] is False
    assert body["dependencies"]["redis"]["ok"] is True


async def test_metrics_are_exposed(gateway: Any) -> None:
    await gateway.get("/api/auth/jwks")

    response = await gateway.get("/metrics")

    assert response.status_code == 200
    assert 'aether_http_requests_total{method="GET",route="/api/auth/jwks",status="200"}' in (
        response.text
    )
    assert "aether_jwks_fetches_total" in response.text
    assert REGISTRY.get_sample_value(
        "aether_jwks_fetches_total", {"trigger": "initial", "outcome": "ok"}
    )
