"""`python -m aether_memory` as a real process, configured from the environment the way
`aether-dev` and the Helm chart configure it (Qdrant Edge on a directory)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.grpc import create_channel
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import eventually, service_process
from aether_memory.__main__ import main


@pytest.fixture
def service_env(
    aether_endpoints: Endpoints,
    pg_dsn: str,
    topic_prefix: str,
    auth_address: str,
    chat_peer: Any,
    tmp_path: Path,
) -> dict[str, str]:
    """The devstack's AETHER_* names plus the memory service's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "AETHER_"))}
    return (
        env
        | aether_endpoints.as_env()
        | {
            "AETHER_ENV": "dev",
            "AETHER_DATABASE_URL": pg_dsn,
            "AETHER_AUTH_GRPC_TARGET": auth_address,
            "AETHER_CHAT_GRPC_TARGET": chat_peer.address,
            "AETHER_HTTP_PORT": str(free_port()),
            "AETHER_GRPC_PORT": str(free_port()),
            "AETHER_LOG_JSON": "false",
            "MEMORY_QDRANT_LOCATION": str(tmp_path / "qdrant"),
            "MEMORY_TOPIC_PREFIX": topic_prefix,
        }
    )


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with service_process("aether_memory", service_env, ready_within_s=90) as proc:
        yield proc


async def test_the_process_serves_health_grpc_and_stops_cleanly(
    service: subprocess.Popen[bytes], service_env: dict[str, str], kit: Any, signing_key: Any
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service_env['AETHER_HTTP_PORT']}"
    ) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        checks = set(ready.json()["checks"])
        assert {
            "postgres",
            "qdrant-edge",
            "embeddings",
            "auth-jwks",
            "chat-membership",
            "grpc",
        } <= checks
        assert any(name.startswith("consumer:") for name in checks)
        assert (await http.get("/healthz")).json()["service"] == "memory"

        target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
        token = kit.mint(signing_key, "proc-user")
        auth = (("authorization", f"Bearer {token}"),)
        async with create_channel(target, default_timeout=30) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(
                health_pb2.HealthCheckRequest(service="aether.memory.v1.MemoryService")
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub: Any = memory_pb2_grpc.MemoryServiceStub(channel)
            stored = await stub.Upsert(
                memory_pb2.UpsertRequest(
                    namespace="memories", records=[memory_pb2.Record(id="p1", text="hello")]
                ),
                metadata=auth,
            )
            assert stored.embedded == 1
            hits = await stub.Search(
                memory_pb2.SearchRequest(namespace="memories", query="hi there"), metadata=auth
            )
            assert [hit.record.id for hit in hits.hits] == ["p1"]

        metrics = (await http.get("/metrics")).text
    assert 'aether_memory_records_upserted_total{namespace="memories",outcome="embedded"} 1.0' in (
        metrics
    )
    assert 'aether_memory_texts_embedded_total{embedder="local"} 2.0' in metrics
    assert "aether_memory_search_duration_seconds_count" in metrics

    service.send_signal(signal.SIGTERM)
    assert service.wait(30) == 0


def test_missing_settings_stop_the_process_with_their_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main()` as `python -m aether_memory` runs it (in-process: the imports cost seconds)."""
    for name in list(os.environ):
        if name.startswith(("MEMORY_", "AETHER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AETHER_ENV", "dev")

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("memory: MemorySettings: missing required setting")
    for name in (
        "MEMORY_DATABASE_URL",
        "MEMORY_QDRANT_LOCATION",
        "MEMORY_KAFKA_BOOTSTRAP",
        "MEMORY_AUTH_GRPC_TARGET",
        "MEMORY_CHAT_GRPC_TARGET",
    ):
        assert name in err


def test_an_incomplete_openai_embedder_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("MEMORY_", "AETHER_")):
            monkeypatch.delenv(name)
    for name, value in {
        "AETHER_ENV": "dev",
        "AETHER_DATABASE_URL": "postgresql://x/y",
        "AETHER_QDRANT_LOCATION": ":memory:",
        "AETHER_KAFKA_BOOTSTRAP": "k:9092",
        "AETHER_AUTH_GRPC_TARGET": "auth:4001",
        "AETHER_CHAT_GRPC_TARGET": "chat:4003",
        "MEMORY_EMBEDDER": "openai",
    }.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit):
        main()
    err = capsys.readouterr().err
    assert "MEMORY_EMBEDDINGS_URL" in err
    assert "MEMORY_EMBEDDINGS_MODEL" in err


async def test_kill_9_during_upserts_loses_no_acknowledged_record(
    service: subprocess.Popen[bytes], service_env: dict[str, str], kit: Any, signing_key: Any
) -> None:
    """Three clients upsert until the process is killed mid-stream; after a
    restart on the same Qdrant Edge directory every acknowledged record is found by search."""
    target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
    auth = (("authorization", f"Bearer {kit.mint(signing_key, 'crash-user')}"),)
    acked: list[str] = []

    async def client(stub: Any, name: str) -> None:
        for n in range(10_000):
            ids = [f"{name}-{n}-{k}" for k in range(4)]
            records = [memory_pb2.Record(id=i, text=f"note {i} on the {n}th session") for i in ids]
            await stub.Upsert(
                memory_pb2.UpsertRequest(namespace="memories", records=records), metadata=auth
            )
            acked.extend(ids)

    async with create_channel(target, default_timeout=30) as channel:
        stub: Any = memory_pb2_grpc.MemoryServiceStub(channel)
        clients = [asyncio.create_task(client(stub, f"c{c}")) for c in range(3)]
        await eventually(
            lambda: len(acked) >= 48 or any(task.done() for task in clients), every=0.005
        )
        service.kill()  # SIGKILL with upserts in flight
        service.wait()
        outcomes = await asyncio.gather(*clients, return_exceptions=True)
    assert all(isinstance(outcome, grpc.aio.AioRpcError) for outcome in outcomes), outcomes
    assert len(acked) >= 48

    with service_process("aether_memory", service_env, ready_within_s=90):
        async with create_channel(target, default_timeout=30) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            for record_id in acked:
                hits = await stub.Search(
                    memory_pb2.SearchRequest(
                        namespace="memories",
                        query=f"note {record_id} on the {record_id.split('-')[1]}th session",
                        limit=3,
                    ),
                    metadata=auth,
                    # gRPC shares subchannels across channels: the killed one's may be in backoff
                    wait_for_ready=True,
                )
                assert record_id in [hit.record.id for hit in hits.hits]
