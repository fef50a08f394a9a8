"""`aether-dev`: the whole platform on this machine, in the foreground.

    aether-dev up       servers + every declared service; Ctrl-C (or SIGTERM) stops it all
    aether-dev down     stop a platform started in another terminal; clean its run state
    aether-dev status   health of each server and service, checked with the real clients

`up` makes sure the machine's PostgreSQL (5432) and Redis (6379) run, starts the native servers
on fixed ports (Kafka 9092, MongoDB 27017, Elasticsearch 9200, S3 9000, SMTP 1025) with data
and logs under `<repo>/.dev/` (`.dev/logs/<name>.log`), checks each answers its client, creates
the databases, topics and buckets services declare, starts the local OpenID Connect provider
(oidc_provider.py, :9400, the stand-in for "Sign in with ..."; auth gets it as provider
`devoidc` unless AUTH_OAUTH_PROVIDERS is set), then starts each service as its own process
and waits for its /readyz. Service output goes to the terminal, prefixed with the service's
name, and to `.dev/logs/<service>.log`. `.dev/run/state.json` records the pids, so `down` and
`status` work from another terminal. How a service declares itself: catalog.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from aether_devstack import oidc_provider
from aether_devstack.catalog import (
    GATEWAY,
    DevError,
    ServiceSpec,
    load_services,
    service_argv,
    service_env,
)
from aether_devstack.provision import http_healthy, probe_all, provision, server_addresses
from aether_devstack.servers import (
    DEV_PORTS,
    HOST,
    POSTGRES_PORT,
    REDIS_PORT,
    NativeStack,
    endpoints_for,
    ensure_machine_servers,
    tcp_open,
)

SERVICE_START_TIMEOUT = 60.0
# The local OIDC provider `up` runs for auth's OAuth login (a third party's stand-in).
DEV_OIDC_PORT = 9400
DEV_OIDC_PROVIDER = "devoidc"
STOP_GRACE = 15.0
_COLORS = ("36", "33", "35", "32", "34", "91", "96", "93")


# -- terminal output
class Terminal:
    """Prefixed, optionally colored lines from many threads, never interleaved mid-line."""

    def __init__(self, stream: IO[str], width: int) -> None:
        self.stream = stream
        self.width = width
        self.lock = threading.Lock()
        self.color = "NO_COLOR" not in os.environ and (
            bool(os.environ.get("FORCE_COLOR")) or stream.isatty()
        )
        self._palette = itertools.cycle(_COLORS)
        self._colors: dict[str, str] = {}

    def line(self, prefix: str, text: str) -> None:
        label = f"{prefix:<{self.width}} |"
        if self.color:
            code = self._colors.setdefault(prefix, next(self._palette))
            label = f"\033[{code}m{label}\033[0m"
        with self.lock:
            self.stream.write(f"{label} {text}\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        self.line("aether-dev", text)


# -- one service process
class ServiceProcess:
    """A service spawned in its own session; its output pumped to the terminal and its log."""

    def __init__(self, spec: ServiceSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.reported_exit = False
        self._pump: threading.Thread | None = None

    def start(self, argv: list[str], env: dict[str, str], terminal: Terminal) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            argv,
            cwd=self.spec.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches us only: we stop things in order
        )
        self._pump = threading.Thread(
            target=self._copy_output, args=(self.proc.stdout, terminal), daemon=True
        )
        self._pump.start()

    def _copy_output(self, stream: IO[str], terminal: Terminal) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            for raw in stream:
                line = raw.rstrip("\n")
                log.write(line + "\n")
                log.flush()
                terminal.line(self.spec.name, line)

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code is not None:
                raise DevError(
                    f"service {self.spec.name} exited with {self.exit_code} while starting; "
                    f"see {self.log_path}"
                )
            # Ready, not just alive: its gRPC server and consumers run once /readyz says 200.
            if self.spec.http_port is None or http_healthy(self.spec.http_port, "/readyz"):
                return
            time.sleep(0.1)
        raise DevError(
            f"service {self.spec.name}: no 200 from :{self.spec.http_port}/readyz after "
            f"{timeout:.0f}s; see {self.log_path}"
        )

    def stop(self, grace: float = STOP_GRACE) -> None:
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=2)


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# -- run state, for `down` and `status` from another terminal
@dataclass
class RunState:
    path: Path

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)  # atomic: a reader never sees half a file

    def read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def clear(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def run_state(state_dir: Path) -> RunState:
    return RunState(state_dir / "run" / "state.json")


def process_entry(pid: int, **extra: Any) -> dict[str, Any]:
    """A pid and its command line as the kernel shows it, to recognise it later."""
    return {"pid": pid, "cmdline": _cmdline(pid), **extra}


def alive_as_recorded(entry: dict[str, Any]) -> bool:
    """The pid runs and is still the program we recorded (pids get reused)."""
    current = _cmdline(entry["pid"])
    return current is not None and current == entry["cmdline"]


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


# -- up
class _Interrupted(KeyboardInterrupt):
    """Raised by the signal handler while starting, so start-up unwinds through clean-up."""


class Platform:
    """`aether-dev up`: start in order, watch, and stop in reverse on a signal."""

    def __init__(self, root: Path, state_dir: Path, services_dir: Path, out: IO[str]) -> None:
        self.root = root
        self.state_dir = state_dir
        self.specs = load_services(services_dir) if services_dir.is_dir() else []
        self.terminal = Terminal(out, max([len(s.name) for s in self.specs] + [len("aether-dev")]))
        self.stack = NativeStack(state_dir, dict(DEV_PORTS))
        self.endpoints = self.stack.endpoints
        self.services: list[ServiceProcess] = []
        self.state = run_state(state_dir)
        self.oidc: subprocess.Popen[bytes] | None = None
        self.stop_requested = threading.Event()
        self._starting = True

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        # While starting: unwind now. Once up: tell the watch loop.
        if not self.stop_requested.is_set():
            self.stop_requested.set()
            if self._starting:
                raise _Interrupted

    def run(self) -> int:
        self._refuse_if_running()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            self._start()
            self._starting = False
            if not self.stop_requested.is_set():
                self._print_summary()
                self._watch()
            return 0
        except _Interrupted:
            self.terminal.say("interrupted while starting")
            return 0
        except DevError as exc:
            self.terminal.say(f"error: {exc}")
            return 1
        except (RuntimeError, OSError) as exc:  # a server that would not start, a busy port
            self.terminal.say(f"error: {type(exc).__name__}: {exc}")
            return 1
        finally:
            self._stop()

    def _refuse_if_running(self) -> None:
        previous = self.state.read()
        if previous and alive_as_recorded(previous["up"]):
            raise DevError(
                f"a platform is already running (pid {previous['up']['pid']}); "
                "`aether-dev down` stops it"
            )
        wanted = dict(DEV_PORTS) | {"oidc": DEV_OIDC_PORT}
        for spec in self.specs:
            wanted |= spec.ports
        taken = [f"{name} ({port})" for name, port in wanted.items() if tcp_open(port)]
        if taken:
            raise DevError(
                f"port(s) already in use: {', '.join(taken)}; a stack started elsewhere? "
                "see `aether-dev status`, stop it with `aether-dev down`"
            )

    def _start(self) -> None:
        say = self.terminal.say
        say(f"PostgreSQL :{POSTGRES_PORT} and Redis :{REDIS_PORT}: the machine's own")
        ensure_machine_servers()
        say(f"starting {', '.join(self.stack.servers)} (logs in {self.state_dir / 'logs'})")
        for server in self.stack.servers.values():
            server.start()
        self._record()
        for server in self.stack.servers.values():
            server.wait_ready(60)
        failing = {k: v for k, v in asyncio.run(probe_all(self.endpoints)).items() if v}
        if failing:
            raise DevError("not healthy: " + "; ".join(f"{k}: {v}" for k, v in failing.items()))
        say("every server answers its client")
        provision(self.endpoints, self.specs)
        self._start_oidc()
        for spec in self.specs:
            self._start_service(spec)

    def _gateway_url(self) -> str:
        gateway = next((s for s in self.specs if s.name == GATEWAY and s.http_port), None)
        return f"http://{HOST}:{gateway.http_port if gateway else 8080}"

    def _start_oidc(self) -> None:
        callback = f"{self._gateway_url()}/api/auth/oauth/{DEV_OIDC_PROVIDER}/callback"
        self.terminal.say(f"starting the local OIDC provider on :{DEV_OIDC_PORT}")
        self.oidc = oidc_provider.spawn(
            DEV_OIDC_PORT, redirect_uris=[callback], start_new_session=True
        )
        self._record()

    def _start_service(self, spec: ServiceSpec) -> None:
        argv = service_argv(spec, self.endpoints, self.root)
        env = service_env(spec, self.specs, self.endpoints, self.root)
        if spec.name == "auth" and self.oidc is not None and "AUTH_OAUTH_PROVIDERS" not in env:
            env["AUTH_OAUTH_PROVIDERS"] = dev_oauth_providers(self._gateway_url())
        service = ServiceProcess(spec, self.state_dir / "logs" / f"{spec.name}.log")
        self.terminal.say(f"starting {spec.name}: {' '.join(argv)}")
        service.start(argv, env, self.terminal)
        self.services.append(service)
        self._record()
        service.wait_healthy(SERVICE_START_TIMEOUT)

    def _record(self) -> None:
        servers = {
            name: process_entry(s.proc.pid, port=s.port)
            for name, s in self.stack.servers.items()
            if s.proc is not None
        }
        if self.oidc is not None:
            servers["oidc"] = process_entry(self.oidc.pid, port=DEV_OIDC_PORT)
        services = {
            s.spec.name: process_entry(
                s.proc.pid, http_port=s.spec.http_port, grpc_port=s.spec.grpc_port
            )
            for s in self.services
            if s.proc is not None
        }
        self.state.write(
            {
                "up": process_entry(os.getpid()),
                "started_at": datetime.now(UTC).isoformat(),
                "root": str(self.root),
                "ports": self.stack.ports,
                "servers": servers,
                "services": services,
            }
        )

    def _print_summary(self) -> None:
        say = self.terminal.say
        say("Aether local platform is up")
        for name, address in server_addresses(self.endpoints).items():
            say(f"  {name:<14} {address}")
        say(f"  {'mail':<14} {self.endpoints.maildir} (what the SMTP server received)")
        if self.oidc is not None:
            say(
                f"  {'oidc':<14} http://{HOST}:{DEV_OIDC_PORT} (auth's OAuth provider "
                f"{DEV_OIDC_PROVIDER}: approves at once, as login_hint's email)"
            )
        if not self.specs:
            say("  no services declared yet ([tool.aether] in services/<name>/pyproject.toml)")
        for spec in self.specs:
            urls = [f"http://{HOST}:{spec.http_port}"] if spec.http_port else []
            urls += [f"grpc {HOST}:{spec.grpc_port}"] if spec.grpc_port else []
            say(f"  {spec.name:<14} {'  '.join(urls) or '(no ports)'}")
        gateway = next((s for s in self.specs if s.name == GATEWAY and s.http_port), None)
        if gateway is not None:
            say(f"  gateway URL    http://{HOST}:{gateway.http_port}")
        say(f"  logs           {self.state_dir / 'logs'}/")
        say("Ctrl-C stops everything (or `aether-dev down` from another terminal)")

    def _watch(self) -> None:
        while not self.stop_requested.wait(0.5):
            for service in self.services:
                code = service.exit_code
                if code is not None and not service.reported_exit:
                    service.reported_exit = True
                    self.terminal.say(
                        f"service {service.spec.name} exited with {code}; see "
                        f"{service.log_path} (the rest keeps running)"
                    )

    def _stop(self) -> None:
        # A second Ctrl-C must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        self._starting = False
        if self.services:
            self.terminal.say("stopping services")
        for service in reversed(self.services):
            service.stop()
        self.terminal.say("stopping servers")
        if self.oidc is not None:
            self.oidc.terminate()
            try:
                self.oidc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.oidc.kill()
                self.oidc.wait()
        self.stack.stop()
        self.state.clear()
        self.terminal.say("stopped")


def dev_oauth_providers(gateway_url: str) -> str:
    """AUTH_OAUTH_PROVIDERS for the local provider: the browser comes back to the gateway."""
    return json.dumps(
        [
            {
                "name": DEV_OIDC_PROVIDER,
                "display_name": "Local OIDC provider (dev)",
                "issuer": f"http://{HOST}:{DEV_OIDC_PORT}",
                "client_id": oidc_provider.DEFAULT_CLIENT_ID,
                "client_secret": oidc_provider.DEFAULT_CLIENT_SECRET,
                "redirect_uris": [f"{gateway_url}/api/auth/oauth/{DEV_OIDC_PROVIDER}/callback"],
            }
        ]
    )


# -- down / status
def down(state_dir: Path, purge: bool, out: IO[str], timeout: float = 60.0) -> int:
    state = run_state(state_dir)
    data = state.read()
    if data is None:
        print(f"no platform recorded in {state.path}", file=out)
    else:
        up = data["up"]
        if alive_as_recorded(up):
            print(f"stopping the platform (pid {up['pid']})", file=out)
            os.kill(up["pid"], signal.SIGTERM)
            _wait_gone([up], timeout)
        # Whatever `up` left behind (it was killed, or did not finish in time).
        leftovers = [
            e
            for group in ("services", "servers")
            for e in data[group].values()
            if alive_as_recorded(e)
        ]
        for entry in leftovers:
            signal_group(entry["pid"], signal.SIGTERM)
        if not _wait_gone(leftovers, STOP_GRACE):
            for entry in leftovers:
                signal_group(entry["pid"], signal.SIGKILL)
        state.clear()
        print("stopped", file=out)
    if purge:
        shutil.rmtree(state_dir, ignore_errors=True)
        print(f"removed {state_dir}", file=out)
    ports = dict(DEV_PORTS) | {"oidc": DEV_OIDC_PORT}
    busy = [f"{name} ({port})" for name, port in ports.items() if tcp_open(port)]
    if busy:
        print(f"still in use, not by a platform recorded here: {', '.join(busy)}", file=out)
        return 1
    return 0


def _wait_gone(entries: Sequence[dict[str, Any]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive_as_recorded(e) for e in entries):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def status(state_dir: Path, out: IO[str]) -> int:
    data = run_state(state_dir).read()
    if data is None:
        print("no platform recorded as running here; probing the default ports", file=out)
    endpoints = endpoints_for(state_dir, data["ports"] if data else dict(DEV_PORTS))
    addresses = server_addresses(endpoints)
    healthy = True
    for name, problem in asyncio.run(probe_all(endpoints)).items():
        healthy &= problem is None
        reason = f"  ({problem})" if problem else ""
        print(
            f"{name:<14} {'up  ' if problem is None else 'DOWN'}  {addresses[name]}{reason}",
            file=out,
        )
    for name, entry in (data or {}).get("services", {}).items():
        port = entry.get("http_port")
        ok = alive_as_recorded(entry) and (port is None or http_healthy(port))
        healthy &= ok
        where = f"http://{HOST}:{port}" if port else f"pid {entry['pid']}"
        print(f"{name:<14} {'up  ' if ok else 'DOWN'}  {where}", file=out)
    return 0 if healthy else 1


# -- entry point
def find_root(start: Path) -> Path:
    """The uv workspace root at or above `start` (where `.dev/` and `services/` live)."""
    for directory in (start, *start.parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text():
            return directory
    raise DevError(f"no uv workspace at or above {start}; pass --root")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-dev", description="Aether's local platform.")
    parser.add_argument("--root", type=Path, help="workspace root (default: found from cwd)")
    parser.add_argument("--state-dir", type=Path, help="data, logs, run state (default .dev/)")
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="run the platform in the foreground")
    up_cmd.add_argument("--services-dir", type=Path, help="default: <root>/services")
    down_cmd = commands.add_parser("down", help="stop a platform started elsewhere")
    down_cmd.add_argument("--purge", action="store_true", help="also delete its data and logs")
    commands.add_parser("status", help="health of each server and service")
    args = parser.parse_args(argv)
    try:
        root = (args.root or find_root(Path.cwd())).resolve()
        state_dir = (args.state_dir or root / ".dev").resolve()
        if args.command == "up":
            services_dir = (args.services_dir or root / "services").resolve()
            return Platform(root, state_dir, services_dir, sys.stdout).run()
        if args.command == "down":
            return down(state_dir, args.purge, sys.stdout)
        return status(state_dir, sys.stdout)
    except DevError as exc:
        print(f"aether-dev: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
