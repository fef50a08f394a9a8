"""Which failures of a datastore mean "it is away" and which mean "run the transaction again",
decided once for every service and every entry point.

- An **outage** (the server is down, unreachable, refusing connections, timing out) is not the
  caller's fault: it leaves as `Unavailable` (gRPC UNAVAILABLE, HTTP 503 with Retry-After), and a
  consumer or background job retries later. Never INTERNAL.
- A **transient** error (a write conflict, a serialization failure, a deadlock victim) says the
  transaction lost a race: the unit of work re-runs its body a bounded number of times; once the
  tries are spent it is an outage too (the contention outlasted us: retry later).

One function per datastore kind (`postgres`, `mongo`, `redis`, `s3`), by type or, for MongoDB, by
the error label the server sets (`TransientTransactionError` is a label, not a type), for S3 by the
HTTP status of the answer. `classify`
asks them all; the gRPC interceptor, the HTTP app, the Kafka consumer and the periodic jobs call
`as_unavailable` on whatever escaped a handler.
"""

from __future__ import annotations

import enum

import asyncpg
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pymongo.errors import ConnectionFailure, PyMongoError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aether_common.errors import AetherError, Unavailable

# What a client may wait before it tries again, in seconds (the Retry-After of an outage).
RETRY_AFTER_S = 1.0


class Failure(enum.Enum):
    OUTAGE = "outage"
    TRANSIENT = "transient"


_PG_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.ConnectionDoesNotExistError,  # the server closed the connection
    asyncpg.ConnectionFailureError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # the pool or connection is closed
    asyncpg.AdminShutdownError,
)
_PG_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
_MONGO_TRANSIENT_LABEL = "TransientTransactionError"
# S3 asks a client to back off with 503 SlowDown; botocore answers both with its own retries.
_S3_BACKOFF_CODES = frozenset({"SlowDown", "ServiceUnavailable", "Throttling", "RequestTimeout"})


def postgres(exc: BaseException) -> Failure | None:
    if isinstance(exc, _PG_TRANSIENT):
        return Failure.TRANSIENT
    if isinstance(exc, _PG_OUTAGES):
        return Failure.OUTAGE
    return None


def mongo(exc: BaseException) -> Failure | None:
    # ConnectionFailure covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError.
    # It may carry the transient label too, but re-running against a server that is away only
    # waits out server selection again: say so now.
    if isinstance(exc, ConnectionFailure):
        return Failure.OUTAGE
    if isinstance(exc, PyMongoError) and exc.has_error_label(_MONGO_TRANSIENT_LABEL):
        return Failure.TRANSIENT
    return None


def redis(exc: BaseException) -> Failure | None:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return Failure.OUTAGE
    return None


def s3(exc: BaseException) -> Failure | None:
    # botocore has already retried (its retry mode) a refused connection, a timeout, a 5xx or a
    # SlowDown before raising: there is no transaction to re-run, only a store to wait for.
    # HTTPClientError: closed connections and read timeouts; ConnectionError: refused, connect
    # timeouts, proxies, TLS.
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return Failure.OUTAGE
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        if status >= 500 or code in _S3_BACKOFF_CODES:
            return Failure.OUTAGE
    return None


def network(exc: BaseException) -> Failure | None:
    """A socket that failed (refused, reset, timed out) under any client."""
    if isinstance(exc, OSError):  # ConnectionError and TimeoutError included
        return Failure.OUTAGE
    return None


KINDS = (postgres, mongo, redis, s3, network)


def classify(exc: BaseException) -> Failure | None:
    """OUTAGE, TRANSIENT, or None for an error that is neither (a bug, a bad request)."""
    if isinstance(exc, AetherError):
        return None  # already typed by the service: it keeps its own mapping
    for kind in KINDS:
        failure = kind(exc)
        if failure is not None:
            return failure
    return None


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is Failure.TRANSIENT


def as_unavailable(exc: BaseException, service: str = "") -> Unavailable | None:
    """The `Unavailable` an untyped outage (or transient error outlasting its retries) becomes;
    None for any other error, which stays an internal error."""
    if classify(exc) is None:
        return None
    what = f"a datastore of the {service} service" if service else "a datastore"
    return Unavailable(f"{what} is unavailable; retry", retry_after=RETRY_AFTER_S)
