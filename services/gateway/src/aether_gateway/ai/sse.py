"""`POST /api/ai/chat/stream` (and `GET /api/jobs/{id}/events`, jobs/stream.py): a stream's
events as Server-Sent Events.

    event: start\ndata: {...}\n\n   event: chunk ...   event: sources ...   event: done ...

The first event is awaited before any byte is sent, so a call that fails at once (validation,
`ai_busy`, the service down) answers the normal JSON error with its status and headers; a failure
after that ends the stream with `event: error` (data = the error JSON). While waiting on the
service, a comment line goes out every `keepalive_s` so proxies keep the connection open.

The client going away (an `http.disconnect` on receive) cancels the writer at once, and with it
the upstream gRPC call, even while no byte is being written (waiting for the first token).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from aether_common.errors import AetherError, InternalError
from aether_common.logging import get_logger
from aether_gateway.ai.convert import Event

MEDIA_TYPE = "text/event-stream"
HEADERS = {
    "cache-control": "no-cache, no-store",
    # nginx and friends buffer responses by default: this one must flow as it is written.
    "x-accel-buffering": "no",
}
KEEPALIVE = b": keep-alive\n\n"

log = get_logger(__name__)


def encode(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event; the JSON is one line, so one `data:` line carries it."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _body(chunk: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _next(events: AsyncGenerator[Event, None]) -> Event:
    return await anext(events)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStreamResponse(Response):
    """An ASGI response writing `events` as SSE; closes them whatever happens. A Response, so
    FastAPI passes it through (with any headers a dependency set)."""

    media_type = MEDIA_TYPE

    def __init__(
        self, events: AsyncGenerator[Event, None], *, keepalive_s: float, name: str = "ai"
    ) -> None:
        """`name` (`ai`, `jobs`) names the tasks and the log line of a failed stream."""
        # Not Response.__init__: there is no body (so no Content-Length either).
        self.events = events
        self.keepalive_s = keepalive_s
        self.name = name
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.create_task(
            self._write(scope, receive, send), name=f"{self.name}-sse-writer"
        )
        watcher = asyncio.create_task(
            _until_disconnect(receive), name=f"{self.name}-sse-disconnect"
        )
        try:
            await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The client gone (or this request cancelled): stop writing, which closes the events
            # and cancels the upstream call.
            for task in (watcher, writer):
                task.cancel()
            await asyncio.gather(watcher, writer, return_exceptions=True)
        failure = None if writer.cancelled() else writer.exception()
        if failure is not None:  # before the first byte: the error boundary answers 500
            raise failure
        if self.background is not None:
            await self.background()

    async def _write(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self.events
        pending: asyncio.Task[Event] | None = None
        try:
            try:
                first = await anext(events)
            except AetherError as error:
                response = JSONResponse(
                    error.http_body(), status_code=error.http_status, headers=error.http_headers()
                )
                await response(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send(_body(encode(*first)))
            try:
                while True:
                    pending = asyncio.create_task(_next(events), name=f"{self.name}-sse-next")
                    while not (await asyncio.wait((pending,), timeout=self.keepalive_s))[0]:
                        await send(_body(KEEPALIVE))
                    try:
                        kind, data = pending.result()
                    except StopAsyncIteration:
                        break
                    finally:
                        pending = None
                    await send(_body(encode(kind, data)))
            except AetherError as error:
                await send(_body(encode("error", error.http_body())))
            except Exception:
                # Too late for a status code: the stream says it failed, the log says why.
                log.exception("stream failed", stream=self.name)
                await send(_body(encode("error", InternalError("internal error").http_body())))
            await send(_body(b"", more=False))
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await self.events.aclose()
