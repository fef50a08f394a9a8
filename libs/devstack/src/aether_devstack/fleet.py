"""Every declared service as its own process, against a given set of servers, on free ports.

What `aether-dev up` does for the fixed dev ports, done for a test session: the e2e suites
start the real services (their `[tool.aether]` commands) against the session's servers, with
fresh databases so nothing mixes with a running dev platform, and reach them through the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aether_devstack.catalog import (
    GATEWAY,
    DevError,
    ServiceSpec,
    load_services,
    service_argv,
    service_env,
)
from aether_devstack.cli import ServiceProcess, Terminal
from aether_devstack.endpoints import Endpoints
from aether_devstack.provision import drop_databases, provision
from aether_devstack.servers import HOST, free_port

START_TIMEOUT_S = 90.0


class Fleet:
    """Start with `start()`, stop with `stop()`; each service's output goes to `log_dir`."""

    def __init__(
        self,
        endpoints: Endpoints,
        root: Path,
        log_dir: Path,
        *,
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
        only: Sequence[str] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.root = root
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        run = uuid.uuid4().hex[:8]
        specs = load_services(root / "services")
        if only is not None:
            specs = [s for s in specs if s.name in only]
        self.specs = [_isolated(spec, run) for spec in specs]
        self.processes: list[ServiceProcess] = []
        self._terminal = Terminal(io.StringIO(), 1)  # output is in the per-service logs

    def spec(self, name: str) -> ServiceSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"no service {name!r} declared under {self.root / 'services'}")

    def http_url(self, name: str = GATEWAY) -> str:
        return f"http://{HOST}:{self.spec(name).http_port}"

    def grpc_target(self, name: str) -> str:
        return f"{HOST}:{self.spec(name).grpc_port}"

    def start(self) -> None:
        provision(self.endpoints, self.specs)
        try:
            for spec in self.specs:  # gateway last (load_services' order)
                self._start(spec)
        except BaseException:
            self.stop()
            raise

    def _start(self, spec: ServiceSpec) -> None:
        env = service_env(spec, self.specs, self.endpoints, self.root)
        env |= self.extra_env.get(spec.name, {})
        process = ServiceProcess(spec, self.log_dir / f"{spec.name}.log")
        process.start(service_argv(spec, self.endpoints, self.root), env, self._terminal)
        self.processes.append(process)
        process.wait_healthy(START_TIMEOUT_S)

    def restart(self, name: str, meanwhile: Callable[[], object] = lambda: None) -> None:
        """Stop one service, call `meanwhile()` while it is down, start it again (benches load
        a service's datastores this way)."""
        process = self.process(name)
        process.stop()
        self.processes.remove(process)
        meanwhile()
        self._start(process.spec)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        databases = [db for spec in self.specs for db in spec.postgres_databases]
        if databases:
            asyncio.run(drop_databases(self.endpoints, databases))

    def process(self, name: str) -> ServiceProcess:
        for process in self.processes:
            if process.spec.name == name:
                return process
        raise DevError(f"service {name} is not running")


def _isolated(spec: ServiceSpec, run: str) -> ServiceSpec:
    """Free ports and this run's own databases, so a dev platform on this machine is untouched."""
    return dataclasses.replace(
        spec,
        http_port=free_port() if spec.http_port else None,
        grpc_port=free_port() if spec.grpc_port else None,
        postgres_databases=[f"{db}_{run}" for db in spec.postgres_databases],
    )
