"""Client channels to other Aether services, and typed errors from their failures.

`create_channel()` gives a grpc.aio channel that:
- puts a default deadline on every unary call that has none (streams: optional);
- retries UNAVAILABLE with exponential backoff ONLY for the methods named idempotent (a retried
  write could apply twice), through gRPC's own service-config retry policy;
- keeps connections alive (keepalive pings) and reconnects quickly after a peer restarts;
- forwards the request id, the caller identity and the trace context, and counts every call.

Services call each other through `ServiceClient` (service_client.py), which holds such a channel
and turns failures into typed errors with `peer_error()`. With a bare channel (tests, tools),
`rpc_errors()` turns a failed call into the typed error its server raised:

    idempotent = ["aether.chat.v1.ChatService/GetRoom"]
    async with create_channel("chat:4003", idempotent_methods=idempotent) as ch:
        with rpc_errors():
            room = await ChatServiceStub(ch).GetRoom(request)   # NotFound, Forbidden, Timeout...
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from aether_common import errors
from aether_common.grpc.interceptors import client_interceptors

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0
# Where a server's google.rpc.Status (ErrorInfo, BadRequest, RetryInfo) travels.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# What a caller may wait before trying a peer that gRPC could not reach (Retry-After).
PEER_RETRY_AFTER_S = 1

# Client and server agree on these (server.py permits pings this often), else the server
# answers GOAWAY "too_many_pings".
KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
# A restarted pod should be found again in seconds, not after grpc's default 120 s backoff cap.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC retry policy (gRFC A6); gRPC caps attempts at 5. The call's deadline bounds them all."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def __post_init__(self) -> None:
        # gRPC silently rejects the WHOLE service config when the policy is invalid.
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be 2..5 (gRPC's limits)")
        if min(self.initial_backoff_s, self.max_backoff_s, self.backoff_multiplier) <= 0:
            raise ValueError("backoffs and multiplier must be positive")
        if not self.retryable_status_codes:
            raise ValueError("retryable_status_codes must not be empty")

    def as_config(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s:.6f}s",
            "maxBackoff": f"{self.max_backoff_s:.6f}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }


def method_selector(name: str) -> dict[str, str]:
    """`pkg.Service/Method` (or `/pkg.Service/Method`) -> one method; `pkg.Service` -> all of it."""
    service, _, method = name.strip("/").partition("/")
    if "." not in service or "/" in method:
        raise ValueError(
            f"idempotent method {name!r}: expected 'package.Service/Method' or 'package.Service'"
        )
    return {"service": service, "method": method} if method else {"service": service}


def service_config(idempotent_methods: Iterable[str], retry: RetryPolicy) -> str:
    """The channel's JSON service config: round-robin over resolved addresses (a headless
    Kubernetes service resolves to every pod) and the retry policy for idempotent methods."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    names = [method_selector(name) for name in idempotent_methods]
    if names:
        config["methodConfig"] = [{"name": names, "retryPolicy": retry.as_config()}]
    return json.dumps(config)


def create_channel(
    target: str,
    *,
    idempotent_methods: Iterable[str] = (),
    default_timeout: float | None = DEFAULT_TIMEOUT_S,
    default_stream_timeout: float | None = None,
    retry: RetryPolicy = RetryPolicy(),  # frozen: one shared default is safe
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    layered: bool = True,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` (`host:port` or `dns:///name:port`).

    `credentials` switches to TLS (`grpc.ssl_channel_credentials(...)`); `options` override
    ours key by key. `layered=False` leaves out the client interceptors (deadline, metadata,
    metrics, span): for a caller that prepares each call itself, as `ServiceClient` does.
    """
    merged: dict[str, Any] = {
        **dict(KEEPALIVE_OPTIONS),
        **dict(RECONNECT_OPTIONS),
        "grpc.enable_retries": 1,
        # Our config is the whole truth: do not take one from DNS TXT records.
        "grpc.service_config_disable_resolution": 1,
        "grpc.service_config": service_config(idempotent_methods, retry),
    }
    merged.update(dict(options))
    # Typed loosely: grpc-stubs has no usable type for a client interceptor.
    chain: list[Any] = (
        client_interceptors(default_timeout, default_stream_timeout) if layered else []
    )
    channel_options = list(merged.items())
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=channel_options, interceptors=chain
        )
    return grpc.aio.insecure_channel(target, options=channel_options, interceptors=chain)


class PeerNotImplemented(errors.AetherError):
    """The peer does not offer the method (an older version of it is deployed)."""

    code = "not_implemented"
    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


def peer_error(exc: grpc.aio.AioRpcError, peer: str) -> errors.AetherError:
    """The typed error for a failed call to `peer` ("auth"): what its server raised, or, when
    gRPC itself gave up (no connection, deadline passed), an error that names the peer."""
    code = exc.code()
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return PeerNotImplemented(f"the {peer} service does not support this operation")
    # A status without error details was not raised by the peer's code.
    if not _has_error_details(exc):
        if code is grpc.StatusCode.UNAVAILABLE:
            return errors.Unavailable(
                f"the {peer} service is unavailable; try again shortly",
                retry_after=PEER_RETRY_AFTER_S,
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return errors.Timeout(f"the {peer} service did not answer in time")
    return errors.from_grpc_error(exc)


def _has_error_details(exc: grpc.aio.AioRpcError) -> bool:
    # A grpc.aio.Metadata mapping at run time (the stubs say a tuple of pairs).
    metadata: Any = exc.trailing_metadata()
    return metadata is not None and STATUS_DETAILS_KEY in metadata


@contextmanager
def rpc_errors() -> Iterator[None]:
    """Re-raise a failed call inside the block as the typed AetherError its server raised."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise errors.from_grpc_error(exc) from exc


async def checked(call: Awaitable[T]) -> T:
    """`await checked(stub.Get(req))`: the response, or the typed AetherError."""
    with rpc_errors():
        return await call
