"""Domain errors map to one HTTP shape and to gRPC status + details, and back."""

from __future__ import annotations

import grpc
import pytest

from aether_common import errors


@pytest.mark.parametrize(
    ("cls", "http", "code"),
    [
        (errors.ValidationFailed, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthenticated, 401, grpc.StatusCode.UNAUTHENTICATED),
        (errors.Forbidden, 403, grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotFound, 404, grpc.StatusCode.NOT_FOUND),
        (errors.Conflict, 409, grpc.StatusCode.ALREADY_EXISTS),
        (errors.PreconditionFailed, 422, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.RateLimited, 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable, 503, grpc.StatusCode.UNAVAILABLE),
        (errors.Timeout, 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_each_error_has_one_http_and_grpc_mapping(
    cls: type[errors.AetherError], http: int, code: grpc.StatusCode
) -> None:
    err = cls("something precise")
    assert err.http_body() == {
        "error": cls.code,
        "detail": "something precise",
        "status_code": http,
    }
    assert err.grpc_status().code is code
    assert errors.BY_GRPC_CODE[code] is cls


def test_service_specific_code_keeps_its_class_status() -> None:
    err = errors.Conflict("email already registered", code="email_taken")
    assert err.http_body()["error"] == "email_taken"
    assert err.http_body()["status_code"] == 409


def test_retry_after_becomes_a_header() -> None:
    assert errors.RateLimited("slow down", retry_after=2.4).http_headers() == {"Retry-After": "3"}
    assert errors.NotFound("x").http_headers() == {}
