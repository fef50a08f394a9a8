"""`python -m aether_chat` as a real process, configured from the environment the way
`aether-dev` and the Helm chart configure it."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether_chat.__main__ import main
from aether_common.grpc import create_channel
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import service_process


@pytest.fixture
def service_env(
    aether_endpoints: Endpoints,
    mongo_db_name: str,
    redis_prefix: str,
    topic_prefix: str,
    fake_auth: Any,
) -> dict[str, str]:
    """The devstack's AETHER_* names plus the chat service's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "AETHER_"))}
    return (
        env
        | aether_endpoints.as_env()
        | {
            "AETHER_ENV": "dev",
            "AETHER_MONGO_DATABASE": mongo_db_name,
            "AETHER_AUTH_GRPC_TARGET": fake_auth.address,
            "AETHER_HTTP_PORT": str(free_port()),
            "AETHER_GRPC_PORT": str(free_port()),
            "AETHER_LOG_JSON": "false",
            "CHAT_REDIS_PREFIX": redis_prefix,
            "CHAT_FANOUT_PREFIX": redis_prefix + "fanout:",
            "CHAT_TOPIC_PREFIX": topic_prefix,
        }
    )


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with service_process("aether_chat", service_env) as proc:
        yield proc


async def test_the_process_serves_health_grpc_and_stops_cleanly(
    service: subprocess.Popen[bytes], service_env: dict[str, str], chat: Any
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service_env['AETHER_HTTP_PORT']}"
    ) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert {"mongo", "redis", "grpc", "outbox-relay-mongo", "retention"} <= set(
            ready.json()["checks"]
        )
        assert (await http.get("/healthz")).json()["service"] == "chat"

        target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
        async with create_channel(target, default_timeout=10) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(
                health_pb2.HealthCheckRequest(service="aether.chat.v1.ChatService")
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub: Any = chat_pb2_grpc.ChatServiceStub(channel)
            owner = chat.user()
            room = await stub.CreateRoom(
                chat_pb2.CreateRoomRequest(name="proc", visibility=chat.PUBLIC),
                metadata=chat.auth(owner),
            )
            sent = await stub.SendMessage(
                chat_pb2.SendMessageRequest(room_id=room.room.room_id, content="hi"),
                metadata=chat.auth(owner),
            )
            assert sent.created
            assert sent.message.seq == 1

        metrics = (await http.get("/metrics")).text
    assert 'aether_chat_messages_sent_total{outcome="created"} 1.0' in metrics
    assert 'aether_chat_fanout_frames_total{type="message"} 1.0' in metrics

    service.send_signal(signal.SIGTERM)
    assert service.wait(30) == 0


def test_missing_settings_stop_the_process_with_their_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main()` as `python -m aether_chat` runs it (in-process: the imports cost seconds)."""
    for name in list(os.environ):
        if name.startswith(("CHAT_", "AETHER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AETHER_ENV", "dev")

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("chat: ChatSettings: missing required setting")
    assert "CHAT_MONGO_URL" in err
    assert "CHAT_AUTH_GRPC_TARGET" in err
