"""The memory service's settings (env prefix `MEMORY_`; the devstack's `AETHER_*` names also work).

Required values have no default: PostgreSQL, Kafka, Qdrant's location, and the gRPC addresses of
auth (the JWKS that verifies callers' tokens) and chat (room membership for "chat" searches).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from aether_common.settings import AetherSettings


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class MemorySettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="MEMORY_")

    service_name: ClassVar[str] = "memory"

    # -- datastores ------------------------------------------------------------------------------
    database_url: str = Field(validation_alias=_alias("MEMORY_DATABASE_URL", "AETHER_DATABASE_URL"))
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # "http(s)://..." is a Qdrant server; anything else is Qdrant Edge in this process: a
    # directory (one process per directory) or ":memory:" (a temporary one, gone at exit).
    qdrant_location: str = Field(
        validation_alias=_alias("MEMORY_QDRANT_LOCATION", "AETHER_QDRANT_LOCATION"), min_length=1
    )
    qdrant_api_key: SecretStr | None = None
    qdrant_timeout_s: int = Field(default=10, ge=1, le=300)
    # Qdrant Edge: build a shard's HNSW index (in a child process) once this many points were
    # added outside it; until then they are searched exactly. Checked every edge_check_s.
    edge_index_after: int = Field(default=20_000, ge=1)
    edge_check_s: float = Field(default=10.0, gt=0)
    # One collection per namespace: `<collection_prefix><namespace>` (tests isolate with it).
    collection_prefix: str = Field(default="memory_", pattern=r"^[A-Za-z0-9_\-]{0,64}$")
    kafka_bootstrap: str = Field(
        validation_alias=_alias("MEMORY_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Kafka topics (and the consumer group) are `<topic_prefix><name>`: empty in production.
    topic_prefix: str = ""
    consumer_group: str = "memory"

    # -- embeddings --------------------------------------------------------------------------
    # "local": all-MiniLM-L6-v2 (int8 ONNX) in this process; "openai": an OpenAI-compatible
    # `/v1/embeddings` endpoint (OpenAI, vLLM, TEI, llama.cpp ...).
    embedder: Literal["local", "openai"] = "local"
    embeddings_url: str = ""  # "https://api.openai.com/v1" (or the full .../embeddings URL)
    embeddings_model: str = ""
    embeddings_api_key: SecretStr | None = None
    embeddings_timeout_s: float = Field(default=30.0, gt=0)
    # "openai" only: the vector size the endpoint returns (the local model is always 384).
    embeddings_dimensions: int = Field(default=384, ge=1, le=65536)
    # Texts per model call: concurrent requests are coalesced up to this many.
    embed_batch_size: int = Field(default=32, ge=1, le=2048)
    # Local model: tokens kept per text (the model was trained on 256) and ONNX threads (0: all).
    max_sequence_tokens: int = Field(default=256, ge=8, le=512)
    embed_threads: int = Field(default=0, ge=0, le=256)

    # -- who is calling (tokens verified with auth's JWKS, as chat does) -----------------------
    auth_grpc_target: str = Field(
        validation_alias=_alias("MEMORY_AUTH_GRPC_TARGET", "AETHER_AUTH_GRPC_TARGET")
    )
    auth_timeout_s: float = Field(default=5.0, gt=0)
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)
    # Services whose calls may name the user they act for (`x-aether-on-behalf-of`,
    # aether_common.delegation): the worker runs `gdpr.export` jobs for users that way.
    delegating_services: list[str] = Field(default_factory=lambda: ["worker"])
    # Services whose own tokens may run operators' RPCs (RebuildIndex), like the admin role:
    # the worker runs `memory.reindex` jobs as itself.
    operator_services: list[str] = Field(default_factory=lambda: ["worker"])
    # "chat" searches ask chat whether the caller is a member of the room (caller's token).
    chat_grpc_target: str = Field(
        validation_alias=_alias("MEMORY_CHAT_GRPC_TARGET", "AETHER_CHAT_GRPC_TARGET")
    )
    chat_timeout_s: float = Field(default=5.0, gt=0)
    # "knowledge" is written by this role or by holders of this permission. Not memory:write:
    # auth grants that to every plan (it covers a user's own memories).
    admin_role: str = "admin"
    knowledge_write_permission: str = "memory:admin"

    # -- limits (memory.proto states them; raise with care) -----------------------------------
    max_records: int = Field(default=256, ge=1, le=10_000)
    max_text_chars: int = Field(default=8000, ge=1, le=1_000_000)
    max_query_chars: int = Field(default=2000, ge=1, le=100_000)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=0, le=1024 * 1024)
    default_limit: int = Field(default=5, ge=1)
    max_limit: int = Field(default=50, ge=1, le=1000)
    # The GDPR export (ExportMyData) is refused, never cut short, past these: records of the
    # user (all namespaces), and the JSON's size (the worker's channel must accept as much).
    export_max_records: int = Field(default=200_000, ge=1)
    export_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _embedder_complete(self) -> Self:
        if self.embedder == "openai" and not (self.embeddings_url and self.embeddings_model):
            raise ValueError(
                "MEMORY_EMBEDDER=openai needs MEMORY_EMBEDDINGS_URL and MEMORY_EMBEDDINGS_MODEL"
            )
        if self.default_limit > self.max_limit:
            raise ValueError("MEMORY_DEFAULT_LIMIT must not exceed MEMORY_MAX_LIMIT")
        return self
