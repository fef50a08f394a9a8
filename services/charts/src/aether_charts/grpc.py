"""The ChartsService gRPC servicer: identify the caller, call the service, answer. Reads run on a
pooled connection outside a transaction (one statement each); an import opens its own
transactions (service.import_file). A datastore away answers UNAVAILABLE, never INTERNAL: the
server interceptor maps the datastores' own errors.
"""

from __future__ import annotations

from typing import Any

from aether.charts.v1 import charts_pb2, charts_pb2_grpc
from aether_charts import schemas
from aether_charts.render import Renderer
from aether_charts.service import ChartsService
from aether_common.grpc.interceptors import Context
from aether_common.postgres import PostgresDatabase
from aether_common.s3 import S3Bucket

SERVICE_NAME = charts_pb2.DESCRIPTOR.services_by_name["ChartsService"].full_name


def register(servicer: ChartsServicer, server: Any) -> None:
    charts_pb2_grpc.add_ChartsServiceServicer_to_server(servicer, server)


class ChartsServicer(charts_pb2_grpc.ChartsServiceServicer):
    def __init__(
        self,
        service: ChartsService,
        database: PostgresDatabase,
        bucket: S3Bucket,
        renderer: Renderer,
    ) -> None:
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
            page = await self._service.candles(conn, query)
        return schemas.candles_response(page)

    async def GetIndicators(
        self, request: charts_pb2.GetIndicatorsRequest, context: Context
    ) -> charts_pb2.GetIndicatorsResponse:
        self._service.caller()
        query = schemas.candle_query(request)
        async with self._db.connection() as conn:
            page = await self._service.indicators(conn, query, request.indicators)
        return schemas.indicators_response(page)

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
        done = await self._service.import_file(
            self._db,
            request.symbol,
            request.csv,
            name=request.name,
            timezone=request.timezone,
            resolution=request.resolution,
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
