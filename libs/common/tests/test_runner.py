"""A real service process run by the runner: health, ordered start, clean stop on signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from aether_common.runner import GC_YOUNGEST
from aether_devstack.servers import free_port

# The service under test: components journal what they do; stopping checks /readyz is 503 already.
SERVICE = """
import asyncio, gc, sys, urllib.error, urllib.request
from fastapi import WebSocket
from aether_common.http import create_http_app
from aether_common.runner import run_service
from aether_common.settings import AetherSettings

port, journal, failing = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")


def note(line):
    with open(journal, "a") as f:
        f.write(line + "\\n")


def readyz_status():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Recorder:
    def __init__(self, name):
        self.name = name

    async def start(self):
        if self.name in failing:
            raise ConnectionRefusedError(f"{self.name} cannot reach its broker")
        note(f"start {self.name}")

    async def stop(self):
        status = await asyncio.to_thread(readyz_status)
        if self.name == "relay":  # the first to stop: how the collector was left once ready
            note(f"gc frozen={gc.get_freeze_count() > 0} youngest={gc.get_threshold()[0]}")
        note(f"stop {self.name} readyz={status}")

    async def ready(self):
        return True


class Settings(AetherSettings):
    service_name = "runnertest"


components = [Recorder("grpc"), Recorder("consumer"), Recorder("relay")]
app = create_http_app("runnertest")


@app.websocket("/ws")
async def hello(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


run_service(Settings(), app, components, port=port)
"""


class Service:
    def __init__(self, tmp_path: Path, failing: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.journal = tmp_path / "journal.txt"
        script = tmp_path / "service.py"
        script.write_text(SERVICE)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.port), str(self.journal), failing],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ | {"AETHER_ENV": "test", "AETHER_LOG_JSON": "true"},
        )

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait_for(self, path: str, status: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.finish()[1]
            try:
                if self.get(path) == status:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{path} never answered {status}")

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def events(self, out: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def journal_lines(self) -> list[str]:
        return self.journal.read_text().splitlines() if self.journal.exists() else []


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    yield svc
    if svc.proc.poll() is None:
        svc.proc.kill()
        svc.proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_in_reverse_order_on_signal(
    service: Service, sig: signal.Signals
) -> None:
    service.wait_for("/readyz", 200)
    assert service.get("/healthz") == 200
    assert service.get("/metrics") == 200
    service.proc.send_signal(sig)
    code, out = service.finish()
    assert code == 0, out
    assert service.journal_lines() == [
        "start grpc",
        "start consumer",
        "start relay",
        # Once ready, what existed was frozen out of the collector's reach, and the youngest
        # generation is collected less often (runner.GC_YOUNGEST).
        f"gc frozen=True youngest={GC_YOUNGEST}",
        # Readiness had already flipped when the first component began to stop.
        "stop relay readyz=503",
        "stop consumer readyz=503",
        "stop grpc readyz=503",
    ]
    events = [e["event"] for e in service.events(out)]
    assert events.index("service ready") < events.index("shutdown requested")
    assert {"event": "stopped", "exit_code": 0}.items() <= service.events(out)[-1].items()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", service.port), timeout=1).close()


def test_websockets_are_served_without_per_message_deflate(service: Service) -> None:
    service.wait_for("/readyz", 200)
    # The client offers permessage-deflate (websockets does by default); the server declines.
    with connect(f"ws://127.0.0.1:{service.port}/ws") as ws:
        assert ws.recv(timeout=5) == "hello"
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_component_failing_to_start_aborts_cleanly(tmp_path: Path) -> None:
    service = Service(tmp_path, failing="consumer")
    code, out = service.finish()
    assert code == 1
    # What started was stopped; what came after the failure never started.
    assert service.journal_lines() == ["start grpc", "stop grpc readyz=503"]
    [failure] = [e for e in service.events(out) if str(e["event"]).startswith("component failed")]
    assert failure["component"] == "consumer"
    assert failure["error"] == "ConnectionRefusedError: consumer cannot reach its broker"
    assert failure["level"] == "error"


def test_port_in_use_exits_non_zero_with_a_clear_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = Service(tmp_path, port=taken.getsockname()[1])
        code, out = service.finish()
    assert code == 1
    assert "HTTP server failed to start" in out
    assert "address already in use" in out.lower()
    assert service.journal_lines() == []
