"""The testcontainers backend: the same servers as Docker containers, where an engine exists.

SMTP has no module; the native aiosmtpd server (pure Python) is used with every backend.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import ServerProcess, build_servers, free_port

IMAGES = {
    "postgres": "postgres:16-alpine",
    "redis": "redis:7-alpine",
    "kafka": "confluentinc/cp-kafka:7.7.1",
    "mongo": "mongo:7",
    "elasticsearch": "docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
    "minio": "minio/minio:RELEASE.2024-10-13T13-34-11Z",
    "qdrant": "qdrant/qdrant:v1.12.4",
}


def require_docker() -> None:
    """Fail with a clear message, not a stack trace, when no Docker engine answers."""
    import docker

    try:
        docker.from_env().ping()
    except Exception as exc:
        raise RuntimeError(
            "AETHER_TEST_BACKEND=containers needs a reachable Docker engine "
            f"({type(exc).__name__}: {exc}); use native (the default) or external"
        ) from None


class ContainerStack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._stack = ExitStack()
        # SMTP and the LLM run natively beside the containers (no images needed for them).
        self.natives: list[ServerProcess] = []

    def start(self) -> Endpoints:
        require_docker()
        # Imported here: the native backend must not need Docker libraries to import.
        from testcontainers.elasticsearch import ElasticSearchContainer
        from testcontainers.kafka import KafkaContainer
        from testcontainers.minio import MinioContainer
        from testcontainers.mongodb import MongoDbContainer
        from testcontainers.postgres import PostgresContainer
        from testcontainers.qdrant import QdrantContainer
        from testcontainers.redis import RedisContainer

        def run(container: Any) -> Any:
            return self._stack.enter_context(container)

        try:
            pg = run(PostgresContainer(IMAGES["postgres"], driver=None))
            redis = run(RedisContainer(IMAGES["redis"]))
            kafka = run(KafkaContainer(IMAGES["kafka"]).with_kraft())
            mongo = run(MongoDbContainer(IMAGES["mongo"]))
            es = run(ElasticSearchContainer(IMAGES["elasticsearch"], mem_limit="1G"))
            minio = run(MinioContainer(IMAGES["minio"]))
            qdrant = run(QdrantContainer(IMAGES["qdrant"]))
            smtp_port, llm_port = free_port(), free_port()
            servers = build_servers(
                self.data_dir,
                {
                    "kafka": 0,
                    "mongo": 0,
                    "elasticsearch": 0,
                    "s3": 0,
                    "smtp": smtp_port,
                    "llm": llm_port,
                },
            )
            self.natives = [servers["smtp"], servers["llm"]]
            for server in self.natives:
                server.start()
            for server in self.natives:
                server.wait_ready(60)
            minio_cfg = minio.get_config()
            return Endpoints(
                postgres_dsn=pg.get_connection_url(),
                redis_url=f"redis://{redis.get_container_host_ip()}:"
                f"{redis.get_exposed_port(6379)}/0",
                kafka_bootstrap=kafka.get_bootstrap_server(),
                mongo_url=mongo.get_connection_url(),
                elasticsearch_url=es.get_url(),
                s3_endpoint=f"http://{minio_cfg['endpoint']}",
                s3_access_key=minio_cfg["access_key"],
                s3_secret_key=minio_cfg["secret_key"],
                smtp_host="127.0.0.1",
                smtp_port=smtp_port,
                maildir=str(self.data_dir / "mail"),
                qdrant_location=f"http://{qdrant.rest_host_address}",
                llm_base_url=f"http://127.0.0.1:{llm_port}/v1",
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in reversed(self.natives):
            server.stop()
        self._stack.close()
