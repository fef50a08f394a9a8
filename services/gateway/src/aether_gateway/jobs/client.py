"""The worker's WorkerService over one shared gRPC channel, every call made with the caller's
token. WatchJob is a stream with its own (long) deadline: a job may run for minutes."""

from __future__ import annotations

import grpc

from aether.worker.v1 import worker_pb2, worker_pb2_grpc
from aether_common.errors import AetherError, Unavailable
from aether_common.grpc import Peer, ServiceClient

WORKER = Peer(
    "worker",
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    worker_pb2_grpc.WorkerServiceStub,
    # Reads, and a cancel (asking twice changes nothing). Never SubmitJob (a retry without an
    # idempotency key makes a second job) nor ReplayDeadJob (the second try finds it queued).
    idempotent=("GetJob", "ListJobs", "CancelJob", "WatchJob", "ListDeadJobs"),
)


class WorkerNotConfigured(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "the worker is not configured on this gateway (AETHER_WORKER_GRPC_TARGET)",
            code="worker_not_configured",
        )


class WorkerClient(ServiceClient["worker_pb2_grpc.WorkerServiceAsyncStub"]):
    """The worker's WorkerService; every call carries the caller's token. `watch_timeout_s` is
    the deadline of one WatchJob stream (the SSE stream ends with a `timeout` error after it)."""

    def __init__(self, target: str, *, timeout_s: float, watch_timeout_s: float) -> None:
        super().__init__(WORKER, target, timeout_s=timeout_s, stream_timeout_s=watch_timeout_s)

    def error(self, exc: grpc.aio.AioRpcError) -> AetherError:
        error = super().error(exc)
        # The HTTP body carries only the detail: a bad field the worker named only in its
        # BadRequest details joins the detail, so the 400 still says which one.
        unnamed = {f: d for f, d in error.field_errors.items() if f not in error.detail}
        if unnamed:
            named = "; ".join(f"{field}: {why}" for field, why in unnamed.items())
            error.detail = f"{error.detail} ({named})"
            error.args = (error.detail,)
        return error
