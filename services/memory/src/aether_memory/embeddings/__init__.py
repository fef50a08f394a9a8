"""Embeddings behind one interface (`Embedder`): the local MiniLM model or an OpenAI-compatible
endpoint, chosen by settings; `Embeddings` coalesces the service's concurrent calls.

Standalone (benchmarks, scripts):

    from aether_memory.embeddings import LocalEmbedder
    embedder = LocalEmbedder()
    vectors = await embedder.embed(["first text", "second text"])   # np.ndarray (2, 384)
"""

from __future__ import annotations

from aether_memory.config import MemorySettings
from aether_memory.embeddings.base import (
    OUTAGE_DETAIL,
    Embedder,
    EmbeddingFailed,
    Vectors,
    normalise,
)
from aether_memory.embeddings.batcher import Embeddings
from aether_memory.embeddings.local import LocalEmbedder
from aether_memory.embeddings.openai import OpenAIEmbedder

__all__ = [
    "OUTAGE_DETAIL",
    "Embedder",
    "EmbeddingFailed",
    "Embeddings",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "Vectors",
    "build_embedder",
    "normalise",
]


def build_embedder(settings: MemorySettings) -> Embedder:
    """The embedder the settings name (MEMORY_EMBEDDER)."""
    if settings.embedder == "openai":
        key = settings.embeddings_api_key
        return OpenAIEmbedder(
            settings.embeddings_url,
            model=settings.embeddings_model,
            dimensions=settings.embeddings_dimensions,
            api_key=key.get_secret_value() if key else None,
            batch_size=settings.embed_batch_size,
            timeout_s=settings.embeddings_timeout_s,
        )
    return LocalEmbedder(
        batch_size=settings.embed_batch_size,
        max_tokens=settings.max_sequence_tokens,
        threads=settings.embed_threads,
    )
