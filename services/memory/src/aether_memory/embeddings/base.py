"""What every embedder is: a lifecycle Component that turns texts into unit vectors.

    embedder = LocalEmbedder()                 # or OpenAIEmbedder(url, model=...)
    await embedder.start()                     # loads the model / opens the HTTP client
    vectors = await embedder.embed(["a", "b"]) # numpy float32 array, shape (2, dimensions)

Vectors are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from aether_common.errors import Unavailable
from aether_common.outages import RETRY_AFTER_S

Vectors = npt.NDArray[np.float32]
# What a caller reads when a dependency of the memory service is away (never its address).
OUTAGE_DETAIL = "a dependency of the memory service is unavailable; retry"


class EmbeddingFailed(Unavailable):
    """The model or the endpoint could not embed: callers get UNAVAILABLE with Retry-After,
    consumers retry the record. `reason` (for the logs) says why; callers are not told."""

    def __init__(self, reason: str) -> None:
        super().__init__(OUTAGE_DETAIL, retry_after=RETRY_AFTER_S)
        self.reason = reason

    def __repr__(self) -> str:
        return f"EmbeddingFailed({self.reason!r})"


@runtime_checkable
class Embedder(Protocol):
    # Component name (readiness) and the `embedder` label of the metrics: "local", "openai".
    name: str
    kind: str
    # The model id reported by the Embed RPC, and the vector size.
    model: str
    dimensions: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool: ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in order; float32, L2-normalised."""
        ...


def normalise(vectors: Vectors) -> Vectors:
    """Rows scaled to unit length (an all-zero row stays zero rather than becoming NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return result
