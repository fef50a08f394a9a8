"""structlog JSON logs, each line carrying the service, request id, trace id and span id.

The request id lives in a contextvar bound by the HTTP middleware / gRPC interceptor; trace and
span ids are read from the current OpenTelemetry span, so logs and traces join up.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from opentelemetry import trace

request_id_var: ContextVar[str | None] = ContextVar("aether_request_id", default=None)


def _add_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = request_id_var.get()
    if request_id:
        event.setdefault("request_id", request_id)
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    """Route structlog and the stdlib (uvicorn, grpc, aiokafka) through one JSON renderer."""

    def add_service(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_context,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        # The level check first: a call below the level (each gRPC call's INFO line when the
        # level is WARNING) then costs no timestamp, context or rendering.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs come from our middleware, with ids; uvicorn's own would duplicate them.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO (each LLM call, each readiness probe): ours say more.
    for noisy in ("httpx", "httpx2"):  # httpx2: the client inside the openai SDK
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
