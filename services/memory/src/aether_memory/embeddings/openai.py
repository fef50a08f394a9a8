"""An OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, TEI, llama.cpp, LiteLLM ...).

    embedder = OpenAIEmbedder("https://api.openai.com/v1", model="text-embedding-3-small",
                              api_key="sk-...", dimensions=1536)

One POST per batch of `batch_size` texts: `{"model", "input": [...]}` -> `{"data": [{"index",
"embedding"}]}`. Vectors are checked for size and L2-normalised (most providers already are).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from aether_memory.embeddings.base import EmbeddingFailed, Vectors, normalise


def embeddings_endpoint(url: str) -> str:
    """`.../v1` -> `.../v1/embeddings`; a full `.../embeddings` URL is kept."""
    url = url.rstrip("/")
    return url if url.endswith("/embeddings") else url + "/embeddings"


class OpenAIEmbedder:
    """Component: the HTTP client (opened at start)."""

    name = "embeddings"
    kind = "openai"

    def __init__(
        self,
        url: str,
        *,
        model: str,
        dimensions: int,
        api_key: str | None = None,
        batch_size: int = 32,
        timeout_s: float = 30.0,
    ) -> None:
        self.endpoint = embeddings_endpoint(url)
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self._timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, headers=self._headers)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ready(self) -> bool:
        # The endpoint is a third party: a probe per /readyz would cost money and rate limit.
        return self._client is not None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        await self.start()
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        parts = await asyncio.gather(*(self._post(list(batch)) for batch in batches))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    async def _post(self, texts: list[str]) -> Vectors:
        assert self._client is not None
        try:
            response = await self._client.post(
                self.endpoint, json={"model": self.model, "input": texts}
            )
        except httpx.HTTPError as exc:
            raise EmbeddingFailed(f"embeddings endpoint unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbeddingFailed(
                f"embeddings endpoint answered {response.status_code}: {response.text[:200]}"
            )
        try:
            body: Any = response.json()
            rows = sorted(body["data"], key=lambda row: int(row["index"]))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingFailed(
                f"embeddings endpoint answered an unexpected body: {exc!r}"
            ) from exc
        if vectors.shape != (len(texts), self.dimensions):
            raise EmbeddingFailed(
                f"embeddings endpoint returned shape {vectors.shape}, expected "
                f"({len(texts)}, {self.dimensions}): check MEMORY_EMBEDDINGS_DIMENSIONS"
            )
        return normalise(vectors)
