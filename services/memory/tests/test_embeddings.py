"""The embedders: the local MiniLM model (vectors and their meaning), the coalescing of
concurrent calls, and the OpenAI-compatible path against a real HTTP server speaking
`/v1/embeddings` (a third-party stand-in that answers with the local model)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aether.memory.v1 import memory_pb2
from aether_common.errors import Unavailable
from aether_devstack.servers import free_port
from aether_memory.embeddings import Embeddings, LocalEmbedder, OpenAIEmbedder, Vectors

PAIRS = [
    # (text, a paraphrase, something unrelated)
    (
        "The stock market crashed today.",
        "Share prices fell sharply this afternoon.",
        "My grandmother bakes bread on Sundays.",
    ),
    (
        "How do I reset my password?",
        "I forgot my login credentials and need a new password.",
        "The river flooded the valley last spring.",
    ),
    (
        "Bitcoin hit a new all-time high.",
        "The price of BTC reached a record.",
        "She plays the violin in an orchestra.",
    ),
]


async def test_local_vectors_are_unit_length_and_mean_something(
    local_embedder: LocalEmbedder,
) -> None:
    texts = [text for triple in PAIRS for text in triple]
    vectors = await local_embedder.embed(texts)
    assert vectors.shape == (9, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for n in range(len(PAIRS)):
        anchor, paraphrase, unrelated = vectors[3 * n : 3 * n + 3]
        assert anchor @ paraphrase > anchor @ unrelated + 0.3, PAIRS[n]

    empty = await local_embedder.embed([])
    assert empty.shape == (0, 384)


async def test_batches_keep_the_callers_order() -> None:
    """Texts are sorted by length into batches; each vector still lands on its own text."""
    embedder = LocalEmbedder(batch_size=2)
    texts = [
        "a much longer sentence about bond yields and inflation",
        "hi",
        "medium text",
        "x " * 400,
    ]
    together = await embedder.embed(texts)
    alone = np.stack([(await embedder.embed([text]))[0] for text in texts])
    assert np.allclose(together, alone, atol=1e-4)


@dataclass
class CountingEmbedder:
    """A real local embedder that also counts its model calls."""

    inner: LocalEmbedder
    calls: list[int] = field(default_factory=list)
    name: str = "embeddings"
    kind: str = "local"
    model: str = "all-MiniLM-L6-v2"
    dimensions: int = 384

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(len(texts))
        return await self.inner.embed(texts)


async def test_concurrent_calls_share_model_calls(local_embedder: LocalEmbedder) -> None:
    counting = CountingEmbedder(local_embedder)
    embeddings = Embeddings(counting, batch_size=32)
    await embeddings.start()
    try:
        texts = [f"question number {n} about dividends" for n in range(16)]
        results = await asyncio.gather(*(embeddings.embed([text]) for text in texts))
    finally:
        await embeddings.stop()
    assert sum(counting.calls) == 16
    assert len(counting.calls) < 16  # coalesced
    expected = await local_embedder.embed(texts)
    assert np.allclose(np.concatenate(results), expected, atol=1e-4)


# -- an OpenAI-compatible endpoint ------------------------------------------------------------
@dataclass
class EmbeddingsServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None
    wrong_size: bool = False


@pytest.fixture
async def embeddings_server(local_embedder: LocalEmbedder) -> AsyncIterator[EmbeddingsServer]:
    port = free_port()
    server_state = EmbeddingsServer(url=f"http://127.0.0.1:{port}/v1")

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        server_state.requests.append(
            {"body": body, "authorization": request.headers.get("authorization")}
        )
        if server_state.fail_with is not None:
            return JSONResponse({"error": {"message": "overloaded"}}, server_state.fail_with)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = await local_embedder.embed(inputs)
        if server_state.wrong_size:
            vectors = vectors[:, :100]
        data = [
            {"object": "embedding", "index": n, "embedding": vector.tolist()}
            for n, vector in enumerate(vectors)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data[::-1],  # providers may answer out of order; `index` says where
                "model": body["model"],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    # uvicorn reports start-up with a flag, not an event.
    while not server.started:
        assert time.monotonic() < deadline, "the embeddings server never started"
        assert not task.done(), task
        await asyncio.sleep(0.01)
    yield server_state
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_openai_embedder_speaks_the_protocol(
    embeddings_server: EmbeddingsServer, local_embedder: LocalEmbedder
) -> None:
    embedder = OpenAIEmbedder(
        embeddings_server.url,
        model="text-embedding-test",
        dimensions=384,
        api_key="sk-test-key",
        batch_size=4,
    )
    texts = [f"note {n} about the bond market" for n in range(10)]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.stop()
    assert np.allclose(vectors, await local_embedder.embed(texts), atol=1e-4)
    assert [len(r["body"]["input"]) for r in embeddings_server.requests] == [4, 4, 2]
    assert {r["body"]["model"] for r in embeddings_server.requests} == {"text-embedding-test"}
    assert {r["authorization"] for r in embeddings_server.requests} == {"Bearer sk-test-key"}


async def test_the_service_runs_on_an_openai_compatible_endpoint(
    start_memory: Any, embeddings_server: EmbeddingsServer, kit: Any
) -> None:
    memory = await start_memory(
        embedder="openai",
        embeddings_url=embeddings_server.url,
        embeddings_model="minilm-remote",
        embeddings_api_key=SecretStr("sk-remote"),
    )
    me = memory.user()
    response = await memory.stub.Embed(
        memory_pb2.EmbedRequest(texts=["hello"]), metadata=memory.auth(me)
    )
    assert (response.model, response.dimensions) == ("minilm-remote", 384)

    await memory.upsert(me, "memories", *(triple[0] for triple in PAIRS))
    hits = await memory.search(me, "memories", "I need a new password")
    assert hits[0].record.text == PAIRS[1][0]
    assert embeddings_server.requests  # the endpoint did the work

    embeddings_server.fail_with = 503
    error = await kit.failure(memory.upsert(me, "memories", "while the endpoint is down"))
    assert isinstance(error, Unavailable)
    embeddings_server.fail_with = None
    embeddings_server.wrong_size = True
    error = await kit.failure(memory.search(me, "memories", "wrong vector size"))
    assert isinstance(error, Unavailable)
