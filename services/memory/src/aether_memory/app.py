"""Wiring: every object of the service built once from its settings, and the components the
runner drives, in start order. `__main__` runs it; tests (memory's and the AI service's) start
the same components in-process:

    memory = MemoryApp(settings, grpc_host="127.0.0.1", grpc_port=0)
    for component in memory.components(events=False):
        await component.start()
    target = memory.grpc.address        # "127.0.0.1:<bound port>"

`embedder=` shares one already-loaded model between apps (tests); by default the settings
choose it (MEMORY_EMBEDDER).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI

from aether_common.auth_jwks import verifying_server
from aether_common.http import create_http_app
from aether_common.lifecycle import Component
from aether_common.postgres import PostgresDatabase, jsonb_as_objects
from aether_memory.config import MemorySettings
from aether_memory.consumers import ContentConsumer
from aether_memory.edge_index import EdgeIndex
from aether_memory.embeddings import Embedder, Embeddings, build_embedder
from aether_memory.grpc import SERVICE_NAME, MemoryServicer, register
from aether_memory.index import VectorIndex, is_server
from aether_memory.namespaces import NAMESPACES
from aether_memory.qdrant_index import QdrantIndex
from aether_memory.rebuild import IndexRebuild
from aether_memory.rooms import RoomMembership
from aether_memory.service import MemoryService


class MemoryApp:
    def __init__(
        self,
        settings: MemorySettings,
        *,
        grpc_host: str = "0.0.0.0",
        grpc_port: int | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        s = self.settings = settings
        self.database = PostgresDatabase(
            s.database_url,
            service="memory",
            migrations=files("aether_memory") / "migrations",
            max_size=s.database_pool_size,
            init=jsonb_as_objects,
        )
        model = embedder or build_embedder(s)
        # One worker for the local model (concurrent ONNX runs only fight over the cores);
        # an HTTP endpoint takes a few requests at once.
        self.embeddings = Embeddings(
            model, batch_size=s.embed_batch_size, workers=1 if model.kind == "local" else 4
        )
        self.index = self._index(s, dimensions=model.dimensions)
        self.rebuild = IndexRebuild(
            self.database, self.index, self.embeddings, page_size=s.embed_batch_size * 4
        )
        self.rooms = RoomMembership(s.chat_grpc_target, timeout_s=s.chat_timeout_s)
        self.service = MemoryService(
            settings=s,
            database=self.database,
            embeddings=self.embeddings,
            index=self.index,
            rooms=self.rooms,
        )
        port = s.grpc_port if grpc_port is None else grpc_port
        self.auth, self.grpc = verifying_server(
            "memory", s, host=grpc_host, port=port, delegating_services=s.delegating_services
        )
        self.grpc.add_service(register, MemoryServicer(self.service, self.database), SERVICE_NAME)
        self.consumer = ContentConsumer(
            self.database,
            self.service,
            bootstrap=s.kafka_bootstrap,
            group_id=s.topic_prefix + s.consumer_group,
            topic_prefix=s.topic_prefix,
        )

    @staticmethod
    def _index(s: MemorySettings, *, dimensions: int) -> VectorIndex:
        """A Qdrant server for a URL; Qdrant Edge in-process for a directory or ":memory:"."""
        namespaces = [ns.value for ns in NAMESPACES]
        if is_server(s.qdrant_location):
            api_key = s.qdrant_api_key
            return QdrantIndex(
                s.qdrant_location,
                prefix=s.collection_prefix,
                namespaces=namespaces,
                dimensions=dimensions,
                api_key=api_key.get_secret_value() if api_key else None,
                timeout_s=s.qdrant_timeout_s,
            )
        return EdgeIndex(
            s.qdrant_location,
            prefix=s.collection_prefix,
            namespaces=namespaces,
            dimensions=dimensions,
            index_after=s.edge_index_after,
            check_interval_s=s.edge_check_s,
        )

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (the real one when built with grpc_port=0), once started."""
        return self.grpc.port

    def components(self, *, events: bool = True) -> list[Component]:
        """Start order (the runner stops them in reverse: gRPC first, the clients last).
        The model loads before gRPC serves, so /readyz turns ready only with it loaded.
        `events=False` consumes nothing (no Kafka needed)."""
        consume: list[Component] = [self.consumer] if events else []
        return [
            self.database,
            self.index,
            self.embeddings,
            self.rebuild,
            self.auth,
            self.rooms,
            *consume,
            self.grpc,
        ]

    def http_app(self) -> FastAPI:
        return create_http_app("memory")
