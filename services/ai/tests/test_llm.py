"""LlmClient.stream against endpoints that misbehave: a local OpenAI-compatible stand-in that
writes raw HTTP (the real model server is tested everywhere else)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from aether_ai.config import ModelConfig
from aether_ai.llm import Delta, Finish, LlmClient
from aether_common.errors import Unavailable

Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
)


def http_chunk(text: str) -> bytes:
    data = text.encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(chunk: object) -> bytes:
    return http_chunk(f"data: {orjson.dumps(chunk).decode()}\n\n")


def delta(content: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


@asynccontextmanager
async def endpoint(reply: Reply) -> AsyncIterator[LlmClient]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # the request head; the body is not needed
        await reply(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    llm = LlmClient({"m": ModelConfig()}, default_base_url=f"http://127.0.0.1:{port}/v1")
    await llm.start()
    try:
        yield llm
    finally:
        await llm.stop()
        server.close()
        await server.wait_closed()


async def events_of(llm: LlmClient) -> list[Delta | Finish]:
    stream = llm.stream("m", [{"role": "user", "content": "hi"}], temperature=0, max_tokens=9)
    return [item async for item in stream]


async def test_a_stream_reads_deltas_usage_and_the_finish() -> None:
    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + http_chunk(": keep-alive comment\n\n"))
        writer.write(event(delta("Hel")) + event(delta("lo", "stop")))
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
        writer.write(event({"choices": [], "usage": usage}))
        writer.write(http_chunk("data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async with endpoint(reply) as llm:
        items = await events_of(llm)
    assert items == [
        Delta("Hel"),
        Delta("lo"),
        Finish("stop", 11, 2, estimated=False, interrupted=False),
    ]


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # the connection drops mid-stream
        event({"error": {"message": "model crashed"}}),  # the endpoint says so
        http_chunk("data: {not json\n\n"),
    ],
    ids=["dropped", "error-event", "not-json"],
)
async def test_a_stream_that_breaks_is_llm_unavailable(tail: bytes) -> None:
    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + event(delta("Hel")) + tail)
        await writer.drain()
        writer.transport.abort()  # no terminating chunk: a broken response

    async with endpoint(reply) as llm:
        with pytest.raises(Unavailable) as caught:
            await events_of(llm)
    assert caught.value.error_code == "llm_unavailable"


async def test_a_rate_limited_endpoint_is_unavailable_with_retry_after() -> None:
    async def reply(writer: asyncio.StreamWriter) -> None:
        body = b'{"error": {"message": "slow down"}}'
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()

    async with endpoint(reply) as llm:
        with pytest.raises(Unavailable) as caught:
            await events_of(llm)
    assert caught.value.error_code == "llm_unavailable"
    assert caught.value.retry_after == 5
