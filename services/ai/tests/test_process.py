"""`python -m aether_ai` as a real process, configured from the environment the way `aether-dev`
and the Helm chart configure it (AETHER_* names), with events on (relay + consumer)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether_ai.__main__ import main
from aether_ai.config import ModelConfig
from aether_ai.llm import LlmClient
from aether_common.grpc import create_channel
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import free_port
from aether_devstack.testkit import service_process


@pytest.fixture
def service_env(
    aether_endpoints: Endpoints,
    llm_base_url: str,
    pg_dsn: str,
    redis_prefix: str,
    topic_prefix: str,
    auth_address: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_", "AETHER_"))}
    return (
        env
        | aether_endpoints.as_env()
        | {
            "AETHER_ENV": "dev",
            "AETHER_DATABASE_URL": pg_dsn,
            "AETHER_AUTH_GRPC_TARGET": auth_address,
            "AETHER_MEMORY_GRPC_TARGET": "127.0.0.1:9",
            "AETHER_HTTP_PORT": str(free_port()),
            "AETHER_GRPC_PORT": str(free_port()),
            "AETHER_LOG_JSON": "false",
            "AI_CACHE_PREFIX": redis_prefix,
            "AI_TOPIC_PREFIX": topic_prefix,
            "AI_MODES": '{"fast": {"max_tokens": 8, "latency_budget_s": 300}}',
        }
    )


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with service_process("aether_ai", service_env, ready_within_s=90) as proc:
        yield proc


async def test_the_process_is_ready_with_its_datastores_and_model_and_stops_cleanly(
    service: subprocess.Popen[bytes], service_env: dict[str, str], ai: Any
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service_env['AETHER_HTTP_PORT']}", timeout=10
    ) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert {"postgres", "redis", "llm", "grpc", "ai-jobs", "cache-invalidation"} <= set(
            ready.json()["checks"]
        )
        assert (await http.get("/healthz")).json()["service"] == "ai"

        target = f"127.0.0.1:{service_env['AETHER_GRPC_PORT']}"
        async with create_channel(target, default_timeout=120) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(
                health_pb2.HealthCheckRequest(service="aether.ai.v1.AiService")
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub: Any = ai_pb2_grpc.AiServiceStub(channel)
            user = ai.user()
            call = stub.Chat(
                ai_pb2.ChatRequest(message="Say hi.", mode="fast"), metadata=ai.auth(user)
            )
            events = [event async for event in call]
            assert events[-1].done.usage.completion_tokens <= 8

        metrics = (await http.get("/metrics")).text
    assert 'aether_ai_tokens_out_total{model="small"}' in metrics
    assert "aether_ai_first_token_seconds_bucket" in metrics
    assert "aether_ai_generation_seconds_bucket" in metrics
    assert "aether_ai_queue_depth 0.0" in metrics
    assert "aether_ai_in_flight 0.0" in metrics

    service.send_signal(signal.SIGTERM)
    assert service.wait(30) == 0


async def test_an_unreachable_model_endpoint_is_not_ready() -> None:
    llm = LlmClient({"small": ModelConfig()}, default_base_url=f"http://127.0.0.1:{free_port()}/v1")
    await llm.start()
    try:
        assert not await llm.ready()
    finally:
        await llm.stop()


async def test_a_model_endpoint_that_is_down_answers_unavailable(start_ai: Any, kit: Any) -> None:
    ai = await start_ai(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    error = await kit.stream_failure(
        ai.stub.Chat(ai_pb2.ChatRequest(message="hi", mode="fast"), metadata=ai.auth(ai.user()))
    )
    assert error.grpc_code is grpc.StatusCode.UNAVAILABLE
    assert error.error_code == "llm_unavailable"
    assert ai.app.slots.in_flight == 0


def test_missing_settings_stop_the_process_with_their_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main()` as `python -m aether_ai` runs it (in-process: the imports cost seconds)."""
    for name in list(os.environ):
        if name.startswith(("AI_", "AETHER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AETHER_ENV", "dev")

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ai: AiSettings: missing required setting")
    for name in (
        "AI_DATABASE_URL",
        "AI_REDIS_URL",
        "AI_KAFKA_BOOTSTRAP",
        "AI_AUTH_GRPC_TARGET",
        "AI_MEMORY_GRPC_TARGET",
        "AI_LLM_BASE_URL",
    ):
        assert name in err
