"""Processes a suite starts: the local OIDC provider, a platform service (re)started, a
service's own process (`service_process`: `python -m` until ready), a writer stopped inside its
transaction (`writer_stopped_mid_transaction`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aether_devstack import oidc_provider as provider
from aether_devstack.catalog import ServiceSpec, service_argv, service_env
from aether_devstack.cli import ServiceProcess, Terminal
from aether_devstack.servers import free_port

if TYPE_CHECKING:
    from aether_devstack.fleet import Fleet


@dataclass(frozen=True)
class OidcProvider:
    """The local OIDC provider (a subprocess, like a real third party) and its one client."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str


@contextmanager
def oidc_provider_process(
    client_id: str, client_secret: str, redirect_uri: str
) -> Iterator[OidcProvider]:
    port = free_port()
    proc = provider.spawn(
        port, redirect_uris=[redirect_uri], client_id=client_id, client_secret=client_secret
    )
    try:
        yield OidcProvider(f"http://127.0.0.1:{port}", client_id, client_secret, redirect_uri)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fleet_env(fleet: Fleet, spec: ServiceSpec) -> dict[str, str]:
    """The environment the fleet gives `spec`'s service (the suite's extra env included)."""
    env = service_env(spec, fleet.specs, fleet.endpoints, fleet.root)
    return env | dict(fleet.extra_env.get(spec.name, {}))


def start_fleet_process(
    fleet: Fleet, process: ServiceProcess, *, within: float, env: Mapping[str, str] = {}
) -> None:
    """Start `process` with its fleet's environment (plus `env`) and wait for its /healthz."""
    spec = process.spec
    argv = service_argv(spec, fleet.endpoints, fleet.root)
    process.start(argv, fleet_env(fleet, spec) | dict(env), Terminal(io.StringIO(), 1))
    process.wait_healthy(within)


def replica_spec(fleet: Fleet, name: str) -> ServiceSpec:
    """`name`'s spec on a new free HTTP port: a second replica of a running service."""
    return dataclasses.replace(fleet.spec(name), http_port=free_port())


@contextmanager
def service_process(
    module: str, env: Mapping[str, str], *, ready_within_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m <module>` with `env`, once its `/readyz` (on `AETHER_HTTP_PORT`) answers 200;
    killed at the end if it still runs. A process that exits while starting fails the test with
    its output. The output goes to a file, not a pipe: a pipe nobody reads fills up (64 KiB) and
    then blocks the process at its next log line."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            ready = f"http://127.0.0.1:{env['AETHER_HTTP_PORT']}/readyz"
            deadline = time.monotonic() + ready_within_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    raise AssertionError(f"{module} exited while starting:\n{output}")
                try:
                    with urllib.request.urlopen(ready, timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:  # refused, or an HTTP error status: not ready yet
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{module} never became ready in {ready_within_s} s")
                time.sleep(0.1)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@asynccontextmanager
async def writer_stopped_mid_transaction(
    script: str, *args: str, stop: signal.Signals
) -> AsyncIterator[float]:
    """Run `script` in its own Python process; once it prints "locked" (from inside its open
    transaction) send it `stop` (SIGKILL: killed; SIGSTOP: paused). Yields the monotonic time
    of the stop; the process is killed and reaped on exit."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=PIPE, stderr=PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stderr is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line.strip() == b"locked", await holder.stderr.read()
        os.kill(holder.pid, stop)
        yield time.monotonic()
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed already
            holder.kill()
        await holder.wait()
