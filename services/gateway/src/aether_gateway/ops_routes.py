"""`/health` (the process answers) and `/api/status` (each dependency, checked live)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from aether_gateway.deps import Resources
from aether_gateway.schemas import DependencyStatus, StatusOut

CHECK_TIMEOUT_S = 1.0

router = APIRouter(tags=["ops"])


def _version() -> str:
    try:
        return version("aether-gateway")
    except PackageNotFoundError:
        return "unknown"


@router.get("/health", summary="Liveness: the gateway process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _probe(check: Callable[[], Awaitable[bool]]) -> DependencyStatus:
    started = time.perf_counter()
    error: str | None = None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            ok = bool(await check())
        if not ok:
            error = "not serving"
    except TimeoutError:
        ok, error = False, f"no answer within {CHECK_TIMEOUT_S}s"
    except Exception as exc:  # a status page reports failures, it does not fail
        # The class only: messages can carry addresses.
        ok, error = False, type(exc).__name__
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyStatus(ok=ok, latency_ms=latency, error=error)


@router.get(
    "/api/status",
    summary="Each dependency's health (each configured upstream's gRPC health check, Redis); "
    "503 when one is down",
    responses={503: {"model": StatusOut}},
)
async def status(resources: Resources) -> JSONResponse:
    async def redis_ping() -> bool:
        return bool(await resources.redis.ping())

    checks: dict[str, Callable[[], Awaitable[bool]]] = {
        "auth": resources.auth.healthy,
        "redis": redis_ping,
    }
    if resources.chat.chat is not None:  # chat is optional (AETHER_CHAT_GRPC_TARGET)
        checks["chat"] = resources.chat.chat.healthy
    if resources.ai is not None:  # ai and memory are optional too
        checks["ai"] = resources.ai.healthy
    if resources.memory is not None:
        checks["memory"] = resources.memory.healthy
    if resources.charts is not None:
        checks["charts"] = resources.charts.healthy
    if resources.alerts is not None:
        checks["alerts"] = resources.alerts.healthy
    if resources.worker is not None:
        checks["worker"] = resources.worker.healthy
    results = await asyncio.gather(*(_probe(check) for check in checks.values()))
    dependencies = dict(zip(checks, results, strict=True))
    body = StatusOut(
        status="ok" if all(d.ok for d in dependencies.values()) else "degraded",
        service="gateway",
        version=_version(),
        dependencies=dependencies,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
