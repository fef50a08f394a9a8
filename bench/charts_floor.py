"""The floor of the gateway's chart reads: gateway -> GetCandles / GetIndicators -> charts, bare.

    python bench/charts_floor.py grpc PORT CONFIG     # the charts side
    python bench/charts_floor.py http PORT CONFIG     # the gateway side

bench/charts.py starts both (CONFIG: me_floor.FloorConfig as JSON; `dsn` is charts' database)
and drives the HTTP side with the load it drives the gateway with, in the same run, checking
first that both answer the same JSON. As bench/me_floor.py, nothing of the kit's: no
interceptors, middleware, dependencies, validation models, metrics, logs or error mapping.

HTTP side (one FastAPI app under uvicorn, as the gateway runs): the token verified as the gateway
does and ONE EVALSHA of the gateway's access script (me_floor's Verifier and access_call), ONE
RPC over a plain grpc.aio channel with the token and a deadline, the gateway's JSON (orjson; times
formatted by the gateway's own rfc3339, the fastest we have). Both sides tune the garbage
collector as our services' runner does (`tune_gc`).

gRPC side (a plain grpc.aio server, uvloop, as charts runs): the forwarded token verified as
charts does (same key and checks, verified tokens kept), then on an asyncpg pool of charts' size
the statements charts runs: the instrument's row and `CANDLES_BIN` / `CANDLES_TRUNC` of
aether_charts.repository for the page (limit + 1: is there a next page), then the lookup of
archived years the window reaches (charts' retention: none here); for indicators also
`time_before` and the warm-up candles, then raw TA-Lib on numpy arrays built from the rows
(SMA, RSI, MACD: the bench's `sma:20,rsi:14,macd:12:26:9`, the only spec this floor answers).
The cursor is charts' own (aether_charts.service's encode/decode), so pages match.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import math
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request  # module level: FastAPI resolves the route's annotations here
from fastapi.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parent))
from me_floor import FloorConfig, Refused, Verifier, access_call, bearer

INDICATORS = "sma:20,rsi:14,macd:12:26:9"
CHARTS_POOL_MAX = 10  # charts' CHARTS_DATABASE_POOL_SIZE default
DEFAULT_LIMIT = 500
INSTRUMENT_SQL = "SELECT timezone, resolution FROM instruments WHERE symbol = $1"
ARCHIVED_SQL = (
    "SELECT symbol, year, key, rows, first_time, last_time, sha256 FROM bars_archive"
    " WHERE symbol = $1 AND last_time >= $2 AND first_time < $3 ORDER BY year"
)
TIME_BEFORE_SQL = (
    "SELECT min(time) FROM (SELECT time FROM bars WHERE symbol = $1 AND time < $2"
    " ORDER BY time DESC LIMIT $3) AS earlier"
)


# -- the gateway side ------------------------------------------------------------------------------
def serve_http(port: int, config: FloorConfig) -> None:
    import grpc
    import orjson
    import uvicorn
    from redis.asyncio import Redis

    from aether.charts.v1 import charts_pb2, charts_pb2_grpc
    from aether_common.redis_pipeline import AutoPipeline
    from aether_gateway.ai.convert import rfc3339  # the fastest formatting we know, as the gateway
    from aether_gateway.revoked_or_limited import ACCESS_LUA

    verifier = Verifier(config)
    member_prefix = secrets.token_hex(8)
    members = itertools.count()
    held: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        redis = Redis.from_url(config.redis_url, decode_responses=True)
        channel = grpc.aio.insecure_channel(config.upstream)
        held.update(
            access=AutoPipeline(redis).script(ACCESS_LUA),
            stub=charts_pb2_grpc.ChartsServiceStub(channel),
        )
        yield
        await channel.close(grace=None)
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)

    async def admitted(request: Request) -> tuple[str | None, Response | None]:
        """The caller's token, or the refusal the gateway would answer."""
        token = bearer(request.headers.get("authorization"))
        if token is None:
            return None, Response(status_code=401)
        try:
            claims = verifier.verify(token)
        except Refused:
            return None, Response(status_code=401)
        keys, args = access_call(config, claims, f"{member_prefix}{next(members)}")
        result = await held["access"](keys=keys, args=args)
        if int(result[0]):
            return None, Response(status_code=401)
        if not int(result[1]):
            return None, Response(status_code=429)
        return token, None

    def window(query: Any, message: Any) -> None:
        for name, field in (("from", "from"), ("to", "to")):
            if query.get(name):
                moment = datetime.fromisoformat(query[name])
                getattr(message, field).FromDatetime(moment.astimezone(UTC))

    @app.get("/api/charts/indicators")
    async def indicators(request: Request) -> Response:
        token, refused = await admitted(request)
        if refused is not None:
            return refused
        q = request.query_params
        message = charts_pb2.GetIndicatorsRequest(
            symbol=q["symbol"],
            interval=q.get("interval", ""),
            limit=int(q.get("limit", DEFAULT_LIMIT)),
            cursor=q.get("cursor", ""),
            indicators=q["indicators"],
        )
        window(q, message)
        answer = await held["stub"].GetIndicators(
            message, metadata=(("authorization", f"Bearer {token}"),), timeout=config.timeout_s
        )
        shaped: dict[str, dict[str, list[float | None]]] = {}
        for series in answer.series:
            values = [None if math.isnan(v) else v for v in series.values]
            shaped.setdefault(series.indicator, {})[series.output] = values
        body = {
            "symbol": answer.symbol,
            "interval": answer.interval,
            "timezone": answer.timezone,
            "times": [rfc3339(t) for t in answer.times],
            "indicators": shaped,
            "next_cursor": answer.next_cursor or None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/api/charts/{symbol}")
    async def candles(symbol: str, request: Request) -> Response:
        token, refused = await admitted(request)
        if refused is not None:
            return refused
        q = request.query_params
        message = charts_pb2.GetCandlesRequest(
            symbol=symbol,
            interval=q.get("interval", ""),
            limit=int(q.get("limit", DEFAULT_LIMIT)),
            cursor=q.get("cursor", ""),
        )
        window(q, message)
        answer = await held["stub"].GetCandles(
            message, metadata=(("authorization", f"Bearer {token}"),), timeout=config.timeout_s
        )
        body = {
            "symbol": answer.symbol,
            "interval": answer.interval,
            "timezone": answer.timezone,
            "candles": [
                {
                    "time": rfc3339(c.time),
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                }
                for c in answer.candles
            ],
            "next_cursor": answer.next_cursor or None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    tune_gc()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


# -- the charts side -------------------------------------------------------------------------------
def serve_grpc(port: int, config: FloorConfig) -> None:
    import asyncpg
    import grpc
    import numpy as np
    import talib
    import uvloop
    from google.protobuf.timestamp_pb2 import Timestamp

    from aether.charts.v1 import charts_pb2, charts_pb2_grpc
    from aether_charts import bars as b
    from aether_charts import indicators as ind
    from aether_charts.repository import CANDLES_BIN, CANDLES_TRUNC
    from aether_charts.service import EARLIEST, LATEST, decode_cursor, encode_cursor

    verifier = Verifier(config)
    # A constant of the one spec answered (charts parses it per request).
    warmup = ind.warmup_bars(ind.parse(INDICATORS))
    one_microsecond = timedelta(microseconds=1)

    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def timestamp(moment: datetime) -> Timestamp:
        """By integer arithmetic, as charts does (FromDatetime costs twice as much)."""
        delta = moment - epoch
        seconds = delta.days * 86_400 + delta.seconds
        return Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)

    def caller(context: Any) -> str:
        token = bearer(dict(context.invocation_metadata() or ()).get("authorization"))
        verifier.verify(token or "")  # Refused: the floor is only driven with good tokens
        return token or ""

    async def no_reset(connection: Any) -> None:
        return None  # as aether_common.postgres.create_pool: nothing to reset on release

    async def fetch_candles(
        conn: Any,
        symbol: str,
        interval: str,
        zone: str,
        start: datetime,
        end: datetime,
        limit: int,
    ) -> list[Any]:
        width, reach = b.INTERVALS[interval], end + b.REACH[interval]
        if isinstance(width, timedelta):
            rows = await conn.fetch(CANDLES_BIN[None], symbol, start, reach, end, limit, width)
        else:
            rows = await conn.fetch(
                CANDLES_TRUNC[None], symbol, start, reach, end, limit, width, zone
            )
        # Then whether the window reaches archived years, as charts asks (none here).
        await conn.fetch(ARCHIVED_SQL, symbol, start, reach)
        return list(rows)

    async def page(conn: Any, request: Any) -> tuple[str, str, str, list[Any], str]:
        """(symbol, interval, timezone, the page's rows, next cursor)."""
        symbol = request.symbol.upper()
        zone, resolution = await conn.fetchrow(INSTRUMENT_SQL, symbol)
        interval = request.interval or resolution
        limit = request.limit or DEFAULT_LIMIT
        start = getattr(request, "from").ToDatetime(UTC) if request.HasField("from") else EARLIEST
        end = request.to.ToDatetime(UTC) if request.HasField("to") else LATEST
        if request.cursor:
            start = max(start, decode_cursor(request.cursor, symbol, interval) + one_microsecond)
        rows = await fetch_candles(conn, symbol, interval, zone, start, end, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(symbol, interval, rows[-1]["bucket"]) if more else ""
        return symbol, interval, zone, rows, cursor

    class FloorCharts(charts_pb2_grpc.ChartsServiceServicer):
        def __init__(self, pool: Any) -> None:
            self.pool = pool

        async def GetCandles(self, request: Any, context: Any) -> Any:
            caller(context)
            async with self.pool.acquire() as conn:
                symbol, interval, zone, rows, cursor = await page(conn, request)
            return charts_pb2.GetCandlesResponse(
                symbol=symbol,
                interval=interval,
                timezone=zone,
                candles=[
                    charts_pb2.Candle(
                        time=timestamp(r[0]),
                        open=r[1],
                        high=r[2],
                        low=r[3],
                        close=r[4],
                        volume=r[5],
                    )
                    for r in rows
                ],
                next_cursor=cursor,
            )

        async def GetIndicators(self, request: Any, context: Any) -> Any:
            caller(context)
            async with self.pool.acquire() as conn:
                symbol, interval, zone, rows, cursor = await page(conn, request)
                history: list[Any] = []
                if rows:
                    first = rows[0]["bucket"]
                    start = await conn.fetchval(TIME_BEFORE_SQL, symbol, first, warmup) or first
                    if start < first:
                        history = await fetch_candles(
                            conn, symbol, interval, zone, start, first, 1_000_000
                        )
            skip = len(history)
            ohlcv = np.array([tuple(r)[1:] for r in history + rows], dtype=np.float64)
            close = np.ascontiguousarray(ohlcv.reshape(-1, 5)[:, 3])
            macd, signal, histogram = talib.MACD(close, 12, 26, 9)
            series = [
                ("sma:20", "sma", talib.SMA(close, 20)),
                ("rsi:14", "rsi", talib.RSI(close, 14)),
                ("macd:12:26:9", "macd", macd),
                ("macd:12:26:9", "signal", signal),
                ("macd:12:26:9", "histogram", histogram),
            ]
            return charts_pb2.GetIndicatorsResponse(
                symbol=symbol,
                interval=interval,
                timezone=zone,
                times=[timestamp(r[0]) for r in rows],
                series=[
                    charts_pb2.IndicatorSeries(indicator=key, output=out, values=v[skip:].tolist())
                    for key, out, v in series
                ],
                next_cursor=cursor,
            )

    async def main() -> None:
        pool = await asyncpg.create_pool(
            config.dsn, min_size=1, max_size=CHARTS_POOL_MAX, reset=no_reset
        )
        server = grpc.aio.server()
        # GetCandles and GetIndicators only: the base class answers UNIMPLEMENTED for the rest.
        servicer = FloorCharts(pool)  # type: ignore[abstract]
        charts_pb2_grpc.add_ChartsServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        tune_gc()
        await server.wait_for_termination()

    uvloop.run(main())


def tune_gc() -> None:
    """What aether_common.runner does once a service is ready (its docstring says why): the
    objects alive now frozen out of the collector's reach, the youngest generation collected
    every GC_YOUNGEST allocations instead of 700. A page of 10,000 candles allocates ~100,000
    objects: with the default, collections would cost the floor more than the service."""
    from aether_common.runner import GC_YOUNGEST

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNGEST, *gc.get_threshold()[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=["http", "grpc"])
    parser.add_argument("port", type=int)
    parser.add_argument("config", help="me_floor.FloorConfig as JSON")
    args = parser.parse_args()
    config = FloorConfig.parse(args.config)
    if args.side == "http":
        serve_http(args.port, config)
    else:
        serve_grpc(args.port, config)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        main()
