"""Benchmark: the AI path through the gateway beside the raw llama.cpp server, and the memory
service's embeddings.

    uv run python bench/ai.py [--hits N] [--streams N] [--max-tokens T] [--embed N]
        [--skip-platform]                                                  (make bench-ai)

Starts what it needs itself: the backing servers (aether_devstack NativeStack, which includes
llama.cpp's OpenAI-compatible server with SmolLM2-135M) and auth, chat, memory, ai and the
gateway as their own processes (aether_devstack Fleet), on free ports with fresh databases. Auth
hashes with cheap argon2id for the run (one bench user; the measured paths never hash a
password) and the gateway's per-plan rate limit is raised so it does not cut the load.

Measured, in one run:
1. Cache hits through the gateway: `POST /api/ai/chat` (mode fast) once to fill the cache, then
   N identical requests one after another on one keep-alive connection (RawHttp, not httpx: httpx
   alone costs milliseconds of CPU per request here). Every answer must say `cached: true`.
   Client-side latency p50/p95/p99. Goal: p95 < 5 ms. Beside it, the floor of any AI request
   through the gateway: `GET /api/ai/mode` (one unary gRPC call to ai, one PostgreSQL read), and
   `GET /api/auth/me` answered from the gateway's own cache (no gRPC call at all), and the write
   each hit commits before it answers, timed alone on the same PostgreSQL.
2. Streaming: the same prompt, `max_tokens` and temperature 0, alternately (a) straight to the
   llama.cpp server (`POST /v1/chat/completions`, stream) and (b) through the gateway's
   `WS /ws/ai-chat` (gateway -> gRPC stream -> ai -> the same server), no_cache. Per run:
   first-token latency (request sent -> first content) and decode rate (tokens after the first /
   time from first to last token). Medians over the runs, and the ratio gateway / raw.
   Goal: >= 0.95 of the raw tokens/s. Beside it, the CPU per token of whoever reads the tokens
   (this process for raw; ai, gateway and this process through the gateway, from /proc): the
   llama.cpp server's threads share these cores with them.
3. Embeddings/s: the memory service's local embedder (all-MiniLM-L6-v2 int8 ONNX) in this
   process, batches of 64 varied sentences.
The memory service's search (Qdrant Edge) has its own script: bench/memory.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auth import cpu_seconds
from chat import ARGON2_BENCH, RAISED_LIMIT, ROOT, RawHttp, new_user, percentile

PROMPT = "Explain in a few sentences what a stock market index is."
BENCH_SYSTEM = "You are Aether, a helpful assistant. Answer briefly and clearly."
MODEL = "smollm2-135m"
GOAL_HIT_P95_MS = 5.0
GOAL_STREAM_RATIO = 0.95


class Platform:
    """Servers + auth, memory, ai and the gateway, started here."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stack: Any = None
        self._fleet: Any = None
        self.gateway_url = ""
        self.llm_url = ""
        self.postgres_dsn = ""  # an admin DSN of the PostgreSQL the services use
        self.redis_url = ""
        self.kafka_bootstrap = ""
        self.gateway_prefix = ""  # the gateway's Redis keys
        self.revocation_prefix = ""  # auth's revocation keys, as the gateway reads them

    def start(
        self,
        max_tokens: int,
        modes: dict[str, Any] | None = None,
        memory_env: dict[str, str] | None = None,
        services: Sequence[str] = ("auth", "chat", "memory", "ai", "gateway"),
        service_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """`modes`: more AI_MODES settings, merged over the bench's "fast"; `memory_env`: the
        memory service's settings; `services`: those started (bench/charts.py starts others),
        `service_env`: more settings of any of them."""
        from aether_devstack.fleet import Fleet
        from aether_devstack.servers import NativeStack

        self._tmp = tempfile.TemporaryDirectory(prefix="aether-bench-", ignore_cleanup_errors=True)
        data = Path(self._tmp.name)
        self._stack = NativeStack(data / "servers")
        endpoints = self._stack.start()
        self.llm_url = endpoints.llm_base_url
        self.postgres_dsn = endpoints.postgres_dsn
        self.redis_url = endpoints.redis_url
        self.kafka_bootstrap = endpoints.kafka_bootstrap
        run = secrets.token_hex(4)
        self.gateway_prefix = f"bench{run}:gateway:"
        self.revocation_prefix = f"bench{run}:auth:revoked:"
        quiet = {"AETHER_LOG_LEVEL": "WARNING"}
        extra = {
            "auth": quiet | ARGON2_BENCH | {"AUTH_REDIS_PREFIX": f"bench{run}:auth:"},
            "memory": quiet | (memory_env or {}),
            "ai": quiet
            | {
                "AI_CACHE_PREFIX": f"bench{run}:ai:cache:",
                # The fast mode as the raw requests ask: same system prompt, temperature 0 and
                # max_tokens, so both paths generate the same tokens.
                "AI_MODES": orjson.dumps(
                    {
                        "fast": {
                            "system_prompt": BENCH_SYSTEM,
                            "temperature": 0,
                            "max_tokens": max_tokens,
                            "latency_budget_s": 120,
                        }
                    }
                    | (modes or {})
                ).decode(),
            },
            "gateway": quiet
            | {
                "GATEWAY_REDIS_KEY_PREFIX": self.gateway_prefix,
                "GATEWAY_REVOCATION_KEY_PREFIX": self.revocation_prefix,
                "GATEWAY_RATE_LIMIT_ANONYMOUS": RAISED_LIMIT,
                "GATEWAY_RATE_LIMIT_FREE": RAISED_LIMIT,
            },
        }
        for name, settings in (service_env or {}).items():
            extra[name] = extra.get(name, {}) | settings
        (data / "logs").mkdir()
        # memory asks chat about room membership: it needs chat's address.
        self._fleet = Fleet(endpoints, ROOT, data / "logs", extra_env=extra, only=list(services))
        self._fleet.start()
        self.gateway_url = self._fleet.http_url("gateway")

    def promote(self, email: str) -> None:
        """Make a registered user an admin: auth's operator CLI with auth's environment (a new
        login carries the role)."""
        from aether_devstack.testkit import fleet_env

        env = fleet_env(self._fleet, self._fleet.spec("auth"))
        argv = [sys.executable, "-m", "aether_auth.admin", "promote", email, "admin"]
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)

    def pid(self, name: str) -> int:
        pid: int = self._fleet.process(name).proc.pid
        return pid

    def stop(self) -> None:
        if self._fleet is not None:
            self._fleet.stop()
        if self._stack is not None:
            self._stack.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


# -- 1. cache hits ---------------------------------------------------------------------------------
async def plain_gets(base: str, token: str, path: str, count: int) -> list[float]:
    http = RawHttp(base)
    try:
        latencies: list[float] = []
        for _ in range(count):
            t0 = time.perf_counter()
            status, answer = await http.request("GET", path, None, token)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {answer}")
        return latencies
    finally:
        http.close()


async def cache_hits(base: str, token: str, count: int) -> list[float]:
    http = RawHttp(base)
    body = {"message": PROMPT, "mode": "fast"}
    try:
        status, first = await http.request("POST", "/api/ai/chat", body, token)
        if status != 200:
            raise RuntimeError(f"POST /api/ai/chat: {status} {first}")
        latencies: list[float] = []
        for _ in range(count):
            t0 = time.perf_counter()
            status, answer = await http.request("POST", "/api/ai/chat", body, token)
            latencies.append((time.perf_counter() - t0) * 1000)
            same = status == 200 and answer.get("cached") and answer["answer"] == first["answer"]
            if not same:
                raise RuntimeError(f"expected the cached answer, got {status} {answer}")
        return latencies
    finally:
        http.close()


async def hit_writes(admin_dsn: str, count: int) -> list[float]:
    """The write a cache hit commits before it answers (its usage row, the day's aggregate, the
    outbox event and a new conversation with both turns: one statement), alone, one after
    another, through the ai service's own code, in a scratch database on the same server."""
    from importlib.resources import files

    from aether_ai.conversations import Conversation, Conversations, Turn
    from aether_ai.records import Completion
    from aether_ai.usage import UsageStore
    from aether_common.postgres import PostgresDatabase

    name = f"bench_hit_writes_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db = PostgresDatabase(
        f"{admin_dsn.rpartition('/')[0]}/{name}",
        service="ai",
        migrations=files("aether_ai") / "migrations",
        max_size=2,
    )
    try:
        await db.start()
        usage, conversations = UsageStore(db), Conversations(db)
        turns = [Turn("user", PROMPT, "fast"), Turn("assistant", "x" * 400, "fast", MODEL)]
        latencies: list[float] = []
        for n in range(count + 20):  # the first 20 warm the pool and the plan
            new = Conversation(str(uuid.uuid4()), [], is_new=True, title=PROMPT, mode="fast")
            spent = Completion(
                str(uuid.uuid4()), "bench", new.id, "chat", "fast", MODEL, 0, 0, 0.0, 1, 0, True
            )
            t0 = time.perf_counter()
            await conversations.append("bench", new, turns, requests=usage.rows([spent]))
            if n >= 20:
                latencies.append((time.perf_counter() - t0) * 1000)
        return latencies
    finally:
        await db.stop()
        await admin.execute(f'DROP DATABASE "{name}"')
        await admin.close()


# -- 2. streaming ----------------------------------------------------------------------------------
class StreamRun:
    def __init__(self, first_token_ms: float, tokens: int, decode_s: float) -> None:
        self.first_token_ms = first_token_ms
        self.tokens = tokens
        self.decode_s = decode_s

    @property
    def tokens_per_s(self) -> float:
        # Tokens after the first over the time from the first to the last.
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 else float("nan")


async def raw_stream(llm_url: str, max_tokens: int) -> StreamRun:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": BENCH_SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    async with httpx.AsyncClient(timeout=120) as client:
        t0 = time.perf_counter()
        first = last = 0.0
        tokens = 0
        async with client.stream("POST", f"{llm_url}/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                delta = orjson.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    last = time.perf_counter()
                    first = first or last
                    tokens += 1
        return StreamRun((first - t0) * 1000, tokens, last - first)


async def gateway_stream(base: str, token: str) -> StreamRun:
    url = base.replace("http://", "ws://") + "/ws/ai-chat"
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None
    ) as ws:
        ready = orjson.loads(await ws.recv())
        if ready["type"] != "ready":
            raise RuntimeError(f"ws /ws/ai-chat: {ready}")
        t0 = time.perf_counter()
        chat = {"type": "chat", "message": PROMPT, "mode": "fast", "no_cache": True}
        await ws.send(orjson.dumps(chat).decode())
        first = last = 0.0
        while True:
            frame = orjson.loads(await ws.recv())
            kind = frame["type"]
            if kind == "chunk" and frame["content"]:
                last = time.perf_counter()
                first = first or last
            elif kind == "done":
                tokens = int(frame["usage"]["completion_tokens"])
                return StreamRun((first - t0) * 1000, tokens, last - first)
            elif kind == "error":
                raise RuntimeError(f"ws /ws/ai-chat: {frame}")


# -- 3. embeddings -------------------------------------------------------------------------------
def sentences(count: int) -> list[str]:
    subjects = ["The index", "Apple stock", "The bond market", "Bitcoin", "The central bank"]
    verbs = ["rose", "fell", "stayed flat", "surprised analysts", "hit a record"]
    tails = ["after earnings", "on inflation data", "in early trading", "this week", "overnight"]
    return [
        f"{subjects[i % 5]} {verbs[(i // 5) % 5]} {tails[(i // 25) % 5]} (note {i})."
        for i in range(count)
    ]


async def embeddings_per_s(count: int) -> tuple[float, Any]:
    from aether_memory.embeddings import LocalEmbedder

    embedder = LocalEmbedder()
    texts = sentences(count)
    await embedder.embed(texts[:64])  # load + warm up
    t0 = time.perf_counter()
    for i in range(0, count, 64):
        await embedder.embed(texts[i : i + 64])
    return count / (time.perf_counter() - t0), embedder


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"p50 {percentile(ordered, 0.5):.2f} ms  p95 {percentile(ordered, 0.95):.2f} ms  "
        f"p99 {percentile(ordered, 0.99):.2f} ms  (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=500, help="cache-hit requests")
    parser.add_argument("--streams", type=int, default=5, help="streaming runs per path")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per streamed answer")
    parser.add_argument("--embed", type=int, default=2000, help="sentences embedded")
    parser.add_argument(
        "--skip-platform", action="store_true", help="only embeddings (no services)"
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, shared by the servers, the services and this process")
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    if not args.skip_platform:
        platform = Platform()
        try:
            await asyncio.to_thread(platform.start, args.max_tokens)
            await platform_phases(platform, args)
        finally:
            await asyncio.to_thread(platform.stop)
    rate, _ = await embeddings_per_s(args.embed)
    print(f"embeddings: {rate:.0f} sentences/s (local all-MiniLM-L6-v2 int8 ONNX, batch 64)")


async def platform_phases(platform: Platform, args: argparse.Namespace) -> None:
    base = platform.gateway_url
    print(f"gateway {base}, llama.cpp server {platform.llm_url}")
    token = await new_user(RawHttp(base), "ai")
    floor = await plain_gets(base, token, "/api/ai/mode", args.hits)
    print(f"GET /api/ai/mode through the gateway (one gRPC call): {summary(floor)}")
    me = await plain_gets(base, token, "/api/auth/me", args.hits)
    print(f"GET /api/auth/me from the gateway's cache (no gRPC call): {summary(me)}")
    hits = await cache_hits(base, token, args.hits)
    p95 = percentile(sorted(hits), 0.95)
    verdict = "ok" if p95 < GOAL_HIT_P95_MS else "MISSED"
    print(f"cache hits through the gateway: {summary(hits)}; goal p95 < 5 ms: {verdict}")
    writes = await hit_writes(platform.postgres_dsn, args.hits)
    print(f"  the write each hit commits, alone (PostgreSQL, one statement): {summary(writes)}")

    raw: list[StreamRun] = []
    through: list[StreamRun] = []
    # CPU per token of who reads the tokens (llama.cpp's own threads share these cores).
    pids = {name: platform.pid(name) for name in ("ai", "gateway")}
    spent = dict.fromkeys(["raw client", "ai", "gateway", "client"], 0.0)
    for _ in range(args.streams):
        t0 = time.process_time()
        raw.append(await raw_stream(platform.llm_url, args.max_tokens))
        t1 = time.process_time()
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        through.append(await gateway_stream(base, token))
        t2 = time.process_time()
        for name, pid in pids.items():
            spent[name] += cpu_seconds(pid) - before[name]
        spent["raw client"] += t1 - t0
        spent["client"] += t2 - t1
    raw_rate = statistics.median(r.tokens_per_s for r in raw)
    gw_rate = statistics.median(r.tokens_per_s for r in through)
    print(
        f"raw llama.cpp:  first token {statistics.median(r.first_token_ms for r in raw):.0f} ms, "
        f"{raw_rate:.1f} tokens/s (median of {len(raw)}, "
        f"{statistics.median(r.tokens for r in raw):.0f} tokens each)"
    )
    print(
        f"through gateway: first token "
        f"{statistics.median(r.first_token_ms for r in through):.0f} ms, {gw_rate:.1f} tokens/s "
        f"(median of {len(through)}, {statistics.median(r.tokens for r in through):.0f} tokens)"
    )
    ratio = gw_rate / raw_rate
    verdict = "ok" if ratio >= GOAL_STREAM_RATIO else "MISSED"
    print(f"streaming ratio gateway/raw: {ratio:.2f}; goal >= 0.95: {verdict}")
    raw_tokens = sum(r.tokens for r in raw)
    gw_tokens = sum(r.tokens for r in through)
    print(
        f"CPU per token: raw client {1000 * spent['raw client'] / raw_tokens:.2f} ms; "
        f"through the gateway: ai {1000 * spent['ai'] / gw_tokens:.2f}, "
        f"gateway {1000 * spent['gateway'] / gw_tokens:.2f}, "
        f"client {1000 * spent['client'] / gw_tokens:.2f} ms"
    )


if __name__ == "__main__":
    main()
