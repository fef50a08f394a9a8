"""Typed domain errors and their one mapping to HTTP and gRPC, both ways.

Raise a subclass of `AetherError` from business code. Transports translate it:
- HTTP: `{"error": code, "detail": message, "status_code": n}` with that status;
- gRPC: the canonical status code, plus google.rpc details (ErrorInfo with the code,
  BadRequest for field errors, RetryInfo for retry-after), per protos/aether/common/v1/errors.proto.
`from_grpc_error` turns a failed call back into the same typed error, so a service's NotFound
becomes a 404 at the gateway.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN_PREFIX = "aether."


class AetherError(Exception):
    """Base of every expected error. `code` is stable and machine-readable."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        field_errors: dict[str, str] | None = None,
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error_code = code or self.code
        self.field_errors = dict(field_errors or {})
        self.retry_after = retry_after
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error_code!r}, {self.detail!r})"

    # -- HTTP ---------------------------------------------------------------------------------
    def http_body(self) -> dict[str, Any]:
        return {"error": self.error_code, "detail": self.detail, "status_code": self.http_status}

    def http_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Round up: a client that waits the advertised time must not be refused again.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    # -- gRPC ---------------------------------------------------------------------------------
    def grpc_status(self, domain: str = "aether") -> grpc.Status:
        details = [
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=self.error_code, domain=domain, metadata=self.metadata
                )
            )
        ]
        if self.field_errors:
            details.append(
                _pack(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                            for f, d in self.field_errors.items()
                        ]
                    )
                )
            )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(self.retry_after * 1000))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(
            code=self.grpc_code.value[0], message=self.detail, details=details
        )
        return rpc_status.to_status(status)


class ValidationFailed(AetherError):
    code = "validation"
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(AetherError):
    code = "unauthenticated"
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(AetherError):
    code = "forbidden"
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(AetherError):
    code = "not_found"
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class Conflict(AetherError):
    code = "conflict"
    http_status = 409
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class PreconditionFailed(AetherError):
    code = "precondition_failed"
    http_status = 422
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(AetherError):
    code = "rate_limited"
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Timeout(AetherError):
    code = "timeout"
    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(AetherError):
    code = "unavailable"
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class InternalError(AetherError):
    code = "internal"
    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


ERROR_CLASSES: tuple[type[AetherError], ...] = (
    ValidationFailed,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    PreconditionFailed,
    RateLimited,
    Timeout,
    Unavailable,
    InternalError,
)
BY_CODE: dict[str, type[AetherError]] = {cls.code: cls for cls in ERROR_CLASSES}

# Every canonical gRPC code a peer may send, to the class whose HTTP status fits it.
BY_GRPC_CODE: dict[grpc.StatusCode, type[AetherError]] = {
    cls.grpc_code: cls for cls in ERROR_CLASSES
} | {
    grpc.StatusCode.OUT_OF_RANGE: ValidationFailed,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: InternalError,
}


def error_for_code(code: str) -> type[AetherError]:
    return BY_CODE.get(code, InternalError)


def from_grpc_error(exc: grpc.RpcError) -> AetherError:
    """Rebuild the typed error a service raised from the status its call returned."""
    grpc_code: grpc.StatusCode = exc.code()
    message: str = exc.details() or grpc_code.name.lower()
    cls = BY_GRPC_CODE.get(grpc_code, InternalError)
    reason: str | None = None
    metadata: dict[str, str] = {}
    field_errors: dict[str, str] = {}
    retry_after: float | None = None
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:
        # Details that contradict the call's own code/message (a proxy rewrote the status):
        # trust the code, ignore the details rather than fail the error path itself.
        status = None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field_errors = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            detail.Unpack(info_retry)
            retry_after = info_retry.retry_delay.ToMilliseconds() / 1000
    if grpc_code is grpc.StatusCode.UNAVAILABLE and reason is None:
        message = "a backend service is unavailable"
    elif cls is InternalError and reason is None:
        # Never leak a peer's internal message to a client.
        message = "internal error"
    return cls(
        message,
        code=reason,
        field_errors=field_errors,
        retry_after=retry_after,
        metadata=metadata,
    )


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
