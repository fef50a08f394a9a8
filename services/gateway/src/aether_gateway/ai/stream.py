"""One streamed answer (Chat or Analyze) as public events, shared by the two streaming
transports: SSE writes it as events (sse.py), the WebSocket as frames (ws.py). (REST answers
are one unary call, ChatWhole or AnalyzeWhole: routes.py.)

Events, in order: `start`, `chunk`..., `sources` (when RAG ran), `done`. The iterator must be
closed (`contextlib.aclosing`) or its reader cancelled for the upstream call to be cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Literal

import grpc

from aether.ai.v1 import ai_pb2
from aether_common.errors import AetherError
from aether_gateway.ai import convert
from aether_gateway.ai.client import AiClient
from aether_gateway.ai.convert import Event
from aether_gateway.ai.metrics import FIRST_CHUNK, STREAMS

Transport = Literal["sse", "ws"]


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
