"""The ChartsService gRPC servicer: identify the caller, call the service, answer. Reads run on a
pooled connection outside a transaction (one statement each); an import opens its own
transactions (service.import_file). Candles and indicators are looked up in the response cache
first (cache.py). A datastore away answers UNAVAILABLE, never INTERNAL: the
server interceptor maps the datastores' own errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_charts import bars as b
from aether_charts import repository, schemas
from aether_charts.cache import ResponseCache, settled
from aether_charts.metrics import CACHE
from aether_charts.render import Renderer
from aether_charts.service import CandlePage, ChartsService
from aether_common.grpc.interceptors import Context
from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket

SERVICE_NAME = charts_pb2.DESCRIPTOR.services_by_name["ChartsService"].full_name

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class _Key:
    """A cache miss: where to keep the answer, and the bar a feed builds (if any)."""

    key: str
    open_bar: datetime | None


def register(servicer: ChartsServicer, server: Any) -> None:
    charts_pb2_grpc.add_ChartsServiceServicer_to_server(servicer, server)


class ChartsServicer(charts_pb2_grpc.ChartsServiceServicer):
    def __init__(
        self,
        service: ChartsService,
        database: PostgresDatabase,
        bucket: S3Bucket,
        renderer: Renderer,
        cache: ResponseCache | None = None,
    ) -> None:
        self._cache = cache
        self._service = service
        self._db = database
        self._bucket = bucket
        self._renderer = renderer

    async def GetCandles(
        self, request: charts_pb2.GetCandlesRequest, context: Context
    ) -> charts_pb2.GetCandlesResponse:
        self._service.caller()
        query = schemas.candle_query(request)
        async with self._db.connection() as conn:
            found = await self._cached(conn, "candles", request, charts_pb2.GetCandlesResponse)
            if isinstance(found, charts_pb2.GetCandlesResponse):
                return found
            page = await self._service.candles(conn, query)
        response = schemas.candles_response(page)
        await self._keep(found, "candles", page, response)
        return response

    async def GetIndicators(
        self, request: charts_pb2.GetIndicatorsRequest, context: Context
    ) -> charts_pb2.GetIndicatorsResponse:
        self._service.caller()
        query = schemas.candle_query(request)
        async with self._db.connection() as conn:
            found = await self._cached(
                conn, "indicators", request, charts_pb2.GetIndicatorsResponse
            )
            if isinstance(found, charts_pb2.GetIndicatorsResponse):
                return found
            page = await self._service.indicators(conn, query, request.indicators)
        response = schemas.indicators_response(page)
        await self._keep(found, "indicators", page.candles, response)
        return response

    async def _cached(
        self, conn: Any, rpc: str, request: Message, message_type: type[M]
    ) -> M | _Key | None:
        """The cached answer, or the key and open bar to keep the answer under (None: nothing
        to cache, e.g. an unknown symbol: the service answers the refusal)."""
        if self._cache is None:
            return None
        symbol = b.symbol(getattr(request, "symbol", ""))
        state = await repository.cache_state(conn, symbol)
        if state is None:
            return None
        version, open_bar = state
        key = self._cache.key(rpc, symbol, version, request)
        hit = await self._cache.get(key, rpc, message_type)
        return hit if hit is not None else _Key(key, open_bar)

    async def _keep(self, found: object, rpc: str, page: CandlePage, response: Message) -> None:
        if self._cache is None or not isinstance(found, _Key):
            return
        if settled(page, found.open_bar):
            await self._cache.put(found.key, response)
        else:
            CACHE.labels(rpc, "unsettled").inc()

    async def ListIndicators(
        self, request: charts_pb2.ListIndicatorsRequest, context: Context
    ) -> charts_pb2.ListIndicatorsResponse:
        self._service.caller()
        return schemas.CATALOG

    async def GetQuote(
        self, request: charts_pb2.GetQuoteRequest, context: Context
    ) -> charts_pb2.GetQuoteResponse:
        self._service.caller()
        async with self._db.connection() as conn:
            instrument, session = await self._service.quote(conn, request.symbol)
        return schemas.quote(instrument, session)

    async def ListSymbols(
        self, request: charts_pb2.ListSymbolsRequest, context: Context
    ) -> charts_pb2.ListSymbolsResponse:
        self._service.caller()
        async with self._db.connection() as conn:
            found = await self._service.search(conn, request.q, request.limit)
        return charts_pb2.ListSymbolsResponse(instruments=[schemas.instrument(f) for f in found])

    async def ImportBars(
        self, request: charts_pb2.ImportBarsRequest, context: Context
    ) -> charts_pb2.ImportBarsResponse:
        self._service.admin()
        if bool(request.csv) == bool(request.parquet):
            raise b.fail("csv", "give the file as exactly one of csv and parquet")
        done = await self._service.import_file(
            self._db,
            request.symbol,
            request.csv or request.parquet,
            name=request.name,
            timezone=request.timezone,
            resolution=request.resolution,
            file_format="csv" if request.csv else "parquet",
        )
        return charts_pb2.ImportBarsResponse(rows=done.rows, written=done.written)

    async def RenderChart(
        self, request: charts_pb2.RenderChartRequest, context: Context
    ) -> charts_pb2.RenderChartResponse:
        self._service.caller()
        chart = schemas.chart_request(request)
        # The connection goes back to the pool before drawing (seconds, in another process).
        async with self._db.connection() as conn:
            picture = await self._service.picture(conn, chart)
        image = await self._service.chart_image(self._bucket, self._renderer, picture)
        return schemas.chart_response(image)
