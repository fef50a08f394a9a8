"""Failures that say a dependency is away, not that the request is wrong: callers get
UNAVAILABLE (retry), consumers retry the record, never INTERNAL."""

from __future__ import annotations

import asyncpg
import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from aether_memory.embeddings import EmbeddingFailed

OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and TimeoutError
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    ResponseHandlingException,  # Qdrant server unreachable
    UnexpectedResponse,  # Qdrant server answered an error
    httpx.HTTPError,
    EmbeddingFailed,  # the model or the embeddings endpoint
)
