"""Benchmark: what our gRPC helpers add to one call, beside plain grpc.aio, in the same run.

    uv run python bench/rpc.py [--calls N]                                     (make bench-rpc)

A server process answers `aether.testing.v1.ProbeService/Echo`, built either plainly
(`grpc.aio.server()`) or with `aether_common.grpc.create_server` (identity, metrics, error
mapping and OpenTelemetry interceptors), with its per-RPC access log off (log level WARNING) or
on (INFO, as services run; JSON lines written to /dev/null).
This process calls it N times one after another over a plain `grpc.aio.insecure_channel` and
over `aether_common.grpc.create_channel` (deadline and identity, OpenTelemetry and metrics
interceptors), with and without the retry service config. Printed per pair: latency p50/p95
and the CPU per call of the client (this process) and of the server (read from /proc). Both
sides run uvloop, as the services do.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import grpc
import uvloop

from aether.testing.v1 import probe_pb2, probe_pb2_grpc

PROBE = "aether.testing.v1.ProbeService"
WARMUP = 200


class Echo(probe_pb2_grpc.ProbeServiceServicer):
    async def Echo(self, request: Any, context: Any) -> probe_pb2.EchoResponse:
        return probe_pb2.EchoResponse(message=request.message)


def serve(kind: str, port: int, ready: Any) -> None:
    import sys

    from aether_common.logging import configure_logging

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the process's whole life)
    configure_logging("probe", "INFO" if kind.endswith("access log") else "WARNING")

    async def main() -> None:
        if kind == "plain":
            server = grpc.aio.server()
            probe_pb2_grpc.add_ProbeServiceServicer_to_server(Echo(), server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
        else:
            from aether_common.grpc import create_server

            ours = create_server("probe", host="127.0.0.1", port=port)
            ours.add_service(probe_pb2_grpc.add_ProbeServiceServicer_to_server, Echo(), PROBE)
            await ours.start()
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    channel: grpc.aio.Channel, calls: int, server_pid: int
) -> tuple[float, float, float, float]:
    stub = probe_pb2_grpc.ProbeServiceStub(channel)
    request = probe_pb2.EchoRequest(message="x")
    for _ in range(WARMUP):
        await stub.Echo(request)
    latencies: list[float] = []
    cpu = time.process_time()
    server_cpu = process_cpu_s(server_pid)
    for _ in range(calls):
        t0 = time.perf_counter()
        await stub.Echo(request)
        latencies.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (time.process_time() - cpu) / calls * 1000
    server_ms = (process_cpu_s(server_pid) - server_cpu) / calls * 1000
    latencies.sort()
    return latencies[calls // 2], latencies[int(calls * 0.95)], cpu_ms, server_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per pair")
    args = parser.parse_args()
    from aether_common.grpc import create_channel
    from aether_devstack.servers import free_port

    clients: dict[str, Callable[[str], grpc.aio.Channel]] = {
        "plain": grpc.aio.insecure_channel,
        "create_channel": lambda target: create_channel(
            target, idempotent_methods=[f"{PROBE}/Echo"]
        ),
        "create_channel, no retry config": create_channel,
    }
    print(f"cores: {os.cpu_count()}; {args.calls} sequential Echo calls per pair")
    print(
        f"{'server':<30}{'client':<34}{'p50 ms':>8}{'p95 ms':>8}"
        f"{'client CPU ms':>15}{'server CPU ms':>15}"
    )
    for kind in ("plain", "create_server", "create_server + access log"):
        port = free_port()
        ready = multiprocessing.Event()
        server = multiprocessing.Process(target=serve, args=(kind, port, ready), daemon=True)
        server.start()
        if not ready.wait(30):
            raise RuntimeError(f"the {kind} server did not start")

        async def run(kind: str = kind, port: int = port, pid: int = server.pid or 0) -> None:
            for name, make in clients.items():
                channel = make(f"127.0.0.1:{port}")
                p50, p95, cpu, server_cpu = await measure(channel, args.calls, pid)
                await channel.close()
                print(f"{kind:<30}{name:<34}{p50:8.2f}{p95:8.2f}{cpu:15.2f}{server_cpu:15.2f}")

        try:
            uvloop.run(run())
        finally:
            server.terminate()
            server.join(5)


if __name__ == "__main__":
    main()
