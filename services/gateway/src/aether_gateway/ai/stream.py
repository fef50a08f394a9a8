"""One streamed answer (Chat or Analyze) as public events, shared by the three transports: REST
collects it (`collect`), SSE writes it as events (sse.py), the WebSocket as frames (ws.py).

Events, in order: `start`, `chunk`..., `sources` (when RAG ran), `done`. The iterator must be
closed (`contextlib.aclosing`) or its reader cancelled for the upstream call to be cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import grpc

from aether.ai.v1 import ai_pb2
from aether_common.errors import AetherError
from aether_gateway.ai import convert
from aether_gateway.ai.client import AiClient
from aether_gateway.ai.convert import Event
from aether_gateway.ai.metrics import FIRST_CHUNK, STREAMS

Transport = Literal["rest", "sse", "ws"]


class UpstreamProtocolError(AetherError):
    """The service ended a stream without its `done` event."""

    code = "bad_gateway"
    http_status = 502
    grpc_code = grpc.StatusCode.INTERNAL


async def answer_events(
    ai: AiClient,
    request: ai_pb2.ChatRequest | ai_pb2.AnalyzeRequest,
    *,
    token: str,
    transport: Transport,
) -> AsyncGenerator[Event, None]:
    """The events of one answer; raises the typed error of a failed call. Ends after `done`."""
    responses = (
        ai.stream(ai.stub.Chat, request, token=token)
        if isinstance(request, ai_pb2.ChatRequest)
        else ai.stream(ai.stub.Analyze, request, token=token)
    )
    began = time.perf_counter()
    first_chunk = True
    outcome = "cancelled"
    try:
        async for message in responses:
            item = convert.event(message)
            if item is None:
                continue
            if item[0] == "chunk" and first_chunk:
                first_chunk = False
                FIRST_CHUNK.labels(transport).observe(time.perf_counter() - began)
            if item[0] == "done":
                # Read the call to its end (its OK status follows `done` at once) rather than
                # cancel a finished call: a cancel costs both sides more than the read.
                async for _ in responses:
                    pass
                outcome = "done"
                yield item
                return
            yield item
        outcome = "error"
        raise UpstreamProtocolError("the ai service ended the answer without finishing it")
    except AetherError:
        outcome = "error"
        raise
    except (asyncio.CancelledError, GeneratorExit):
        outcome = "cancelled"
        raise
    finally:
        # Closes the call (cancelling it when it is still running) before this returns.
        await responses.aclose()
        STREAMS.labels(transport, outcome).inc()


async def collect(events: AsyncIterator[Event]) -> dict[str, Any]:
    """The whole answer of a stream, in the shape of `AnswerOut`."""
    answer: dict[str, Any] = {
        "answer": "",
        "conversation_id": "",
        "request_id": "",
        "mode": "",
        "model": "",
        "agents": [],
        "cached": False,
        "sources": [],
        "parts": [],
        "usage": None,
        "finish_reason": "",
    }
    async for kind, data in events:
        if kind == "start":
            answer.update(data)
        elif kind == "sources":
            answer["sources"] = data["sources"]
        elif kind == "done":
            answer.update(data)
    return answer
