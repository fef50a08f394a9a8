"""Quick: the service starts on an empty database and answers."""

from __future__ import annotations

from typing import Any


async def test_empty_database_lists_nothing(charts: Any) -> None:
    from aether.charts.v1 import charts_pb2

    found = await charts.stub.ListSymbols(
        charts_pb2.ListSymbolsRequest(q=""), metadata=charts.auth("u")
    )
    assert list(found.instruments) == []
