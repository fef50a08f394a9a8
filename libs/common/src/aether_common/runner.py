"""One way to run a service process: the HTTP app plus its components, stopped cleanly.

    app = create_http_app("auth", routers=[api.router], lifespan=lifespan)
    run_service(settings, app, [grpc_server, consumer, outbox_relay])

Start-up: logging (+ telemetry), then uvicorn (the app's lifespan creates pools and clients;
/healthz answers, /readyz says "starting"), then each component in order; once all run, /readyz
turns ready. A component that fails to start stops what already started, and the process exits
1 with a log line naming it.

Once ready, the cyclic garbage collector is tuned for a long-lived server (bench/chat.py, 2,000
WebSockets, pauses logged from gc.callbacks): what exists then (modules, the app, pools,
clients) lives as long as the process and is frozen out of its reach (`gc.freeze`: chat's and
auth's full collections had paused them 80-120 ms every 20-50 s); and the youngest generation
is collected every GC_YOUNGEST allocations instead of 700, so that objects of a request that
dies young die before a collection promotes them (the gateway's full collections over its
connections had paused it 150-200 ms every few seconds under load; with this, end to end p95
at 24,000 deliveries/s went from 154 to 71 ms, at 36,000 from 324 to 192 ms).

Shutdown on SIGTERM or SIGINT: /readyz turns 503 first (so load balancers stop sending), an
optional drain pause, components stop in reverse order, then uvicorn finishes in-flight requests
and runs the lifespan's shutdown. Exit 0. A second signal makes uvicorn stop waiting for open
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Generator, Sequence
from typing import NoReturn

import uvicorn
from fastapi import FastAPI

from aether_common import telemetry
from aether_common.http import ReadinessState, readiness_of
from aether_common.lifecycle import Component
from aether_common.logging import configure_logging, get_logger
from aether_common.settings import AetherSettings

DEFAULT_HTTP_HOST = "0.0.0.0"
DEFAULT_HTTP_PORT = 8000

log = get_logger(__name__)

GC_YOUNGEST = 50_000  # allocations between collections of the youngest generation (700)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT and the order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ServiceRunner:
    """Drives one process: uvicorn + components, readiness, ordered start and stop."""

    def __init__(
        self,
        app: FastAPI,
        components: Sequence[Component] = (),
        *,
        host: str = DEFAULT_HTTP_HOST,
        port: int = DEFAULT_HTTP_PORT,
        drain_seconds: float = 0.0,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.app = app
        self.components = list(components)
        self.host, self.port = host, port
        self.drain_seconds = drain_seconds
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                lifespan="on",
                log_config=None,
                access_log=False,
                server_header=False,  # a service does not name its software to callers
                # Real-time frames are small JSON, encoded once and sent to many sockets:
                # per-message deflate would compress each copy again, per connection (at 10k
                # deliveries/s it nearly doubled the gateway's CPU and p95).
                ws_per_message_deflate=False,
                timeout_graceful_shutdown=int(stop_timeout),
            )
        )
        self._stop_requested: asyncio.Event | None = None

    def request_stop(self) -> None:
        """What SIGTERM does; callable from the loop's thread (tests use it in-process)."""
        if self._stop_requested is None:
            return
        if not self._stop_requested.is_set():
            log.info("shutdown requested")
            self._stop_requested.set()
        else:
            log.warning("second shutdown request: not waiting for open connections")
            self.server.force_exit = True

    async def run(self) -> int:
        """Serve until asked to stop; return the process exit code."""
        self._stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        assert self._stop_requested is not None
        readiness = readiness_of(self.app)
        readiness.add_components(self.components)
        readiness.state = ReadinessState.STARTING
        serving = asyncio.create_task(self._serve(), name="uvicorn")
        if not await self._http_listening(serving):
            log.error("HTTP server failed to start", host=self.host, port=self.port)
            return 1

        started, code = await self._start_components()
        if code == 0 and not self._stop_requested.is_set():
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNGEST, *gc.get_threshold()[1:])
            readiness.state = ReadinessState.READY
            log.info("service ready", port=self.port, components=[c.name for c in started])
            stopping = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if serving.done():
                log.error("HTTP server stopped on its own; shutting down")
                code = 1

        readiness.state = ReadinessState.STOPPING
        if code == 0 and self.drain_seconds > 0:
            # Let load balancers see the 503 before connections start to be refused.
            await asyncio.sleep(self.drain_seconds)
        if not await self._stop_components(started):
            code = 1
        self.server.should_exit = True
        if await serving != 0:
            code = 1
        (log.info if code == 0 else log.error)("stopped", exit_code=code)
        return code

    async def _serve(self) -> int:
        try:
            await self.server.serve()
        except SystemExit as exc:  # uvicorn exits on a bind or lifespan failure
            return exc.code if isinstance(exc.code, int) else 1
        return 0

    async def _http_listening(self, serving: asyncio.Task[int]) -> bool:
        while not self.server.started:
            if serving.done():
                return False
            await asyncio.sleep(0.01)
        return True

    async def _start_components(self) -> tuple[list[Component], int]:
        assert self._stop_requested is not None
        started: list[Component] = []
        for component in self.components:
            if self._stop_requested.is_set():
                break
            log.info("starting component", component=component.name)
            try:
                async with asyncio.timeout(self.start_timeout):
                    await component.start()
            except Exception as exc:
                log.error(
                    "component failed to start; stopping what started",
                    component=component.name,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
                return started, 1
            started.append(component)
        return started, 0

    async def _stop_components(self, started: Sequence[Component]) -> bool:
        clean = True
        for component in reversed(started):
            log.info("stopping component", component=component.name)
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await component.stop()
            except Exception as exc:  # keep stopping the others
                log.error(
                    "component failed to stop cleanly",
                    component=component.name,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
                clean = False
        return clean

    def run_forever(self) -> int:
        """Run on a fresh event loop (uvloop when installed), as a process's main does."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(self.run())


def run_service(
    settings: AetherSettings,
    app: FastAPI,
    components: Sequence[Component] = (),
    *,
    host: str | None = None,
    port: int | None = None,
    drain_seconds: float = 0.0,
) -> NoReturn:
    """The `main` of every service: set up logging and telemetry, serve, exit with the code.

    The HTTP address comes from the arguments, else the settings (AETHER_HTTP_HOST/PORT).
    """
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    _configure_telemetry(settings)
    runner = ServiceRunner(
        app,
        components,
        host=host or settings.http_host,
        port=port or settings.http_port,
        drain_seconds=drain_seconds,
    )
    code = runner.run_forever()
    _shutdown_telemetry()
    sys.exit(code)


def _configure_telemetry(settings: AetherSettings) -> None:
    telemetry.configure_telemetry(
        settings.service_name,
        otlp_endpoint=settings.otlp_endpoint,
        environment=settings.environment.value,
    )


def _shutdown_telemetry() -> None:
    telemetry.shutdown_telemetry()  # flush the last spans before the process ends


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
