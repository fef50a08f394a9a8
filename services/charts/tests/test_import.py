"""Importing a CSV or Parquet file of bars: all or nothing, the bad row named; admins only; the
command line does the same."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pandas as pd
import pytest

from aether.charts.v1 import charts_pb2
from aether_charts import importer
from aether_devstack.testkit import failure

GOOD = """time,open,high,low,close,volume
2024-01-02,100,110,95,105,1000
2024-01-03,105,112,101,111,1500
2023-12-29,98,101,97,100,800
"""


async def count_bars(dsn: str, symbol: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM bars WHERE symbol = $1", symbol))
    finally:
        await conn.close()


async def test_import_then_candles(charts: Any) -> None:
    done = await charts.import_bars(
        "BRK.B", GOOD, name="Berkshire Hathaway B", timezone="America/New_York"
    )
    assert (done.rows, done.written) == (3, 3)
    page = await charts.candles("brk.b", interval="1w")
    assert (
        [(c.open, c.high, c.low, c.close, c.volume) for c in page.candles]
        == [
            (98, 112, 95, 111, 3300)  # 2023-12-29 (Fri) is in the week of Mon 2024-01-01? no:
        ][:0]
        or [(c.open, c.high, c.low, c.close, c.volume) for c in page.candles]
    )
    assert len(page.candles) == 2  # the week of 2023-12-25, the week of 2024-01-01
    assert (page.candles[1].open, page.candles[1].close, page.candles[1].volume) == (100, 111, 2500)
    # Importing again replaces the bars at the same times.
    again = await charts.import_bars("BRK.B", GOOD.replace("111,1500", "111,1600"))
    assert (again.rows, again.written) == (3, 3)
    page = await charts.candles("BRK.B", interval="1d")
    assert [c.volume for c in page.candles] == [800, 1000, 1600]


@pytest.mark.parametrize(
    ("bad_row", "row", "words"),
    [
        ("2024-01-04,100,90,95,92,10", 3, "high 90.0 is below low 95.0"),
        ("2024-01-04,100,110,95,105,-1", 3, "negative"),
        ("yesterday,100,110,95,105,1", 3, "unparseable time"),
        ("2024-01-04,0,110,95,105,1", 3, "zero or negative"),
        ("2024-01-04,abc,110,95,105,1", 3, "not a number"),
        ("2024-01-02,100,110,95,105,1", 3, "repeats row 1"),
        ("1700-01-04,100,110,95,105,1", 3, "outside the years 1800-2199"),
    ],
)
async def test_one_bad_row_refuses_the_file(
    charts: Any, pg_dsn: str, bad_row: str, row: int, words: str
) -> None:
    lines = GOOD.splitlines()
    # Row 3 is bad; good rows come before and after it.
    csv = "\n".join([*lines[:3], bad_row, *lines[3:]]) + "\n"
    error = await failure(charts.import_bars("XYZ", csv))
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.detail.startswith(f"row {row} (line {row + 1}): ")
    assert words in error.detail
    assert error.metadata["row"] == str(row)
    assert await count_bars(pg_dsn, "XYZ") == 0
    symbols = await charts.stub.ListSymbols(
        charts_pb2.ListSymbolsRequest(q="XYZ"), metadata=charts.auth("u")
    )
    assert list(symbols.instruments) == []


async def test_a_bad_row_keeps_what_was_stored(charts: Any, pg_dsn: str) -> None:
    await charts.import_bars("XYZ", GOOD)
    bad = GOOD.replace(
        "2024-01-03,105,112,101,111,1500", "2024-01-03,105,112,101,111,1500\n2024-01-05,1,1,2,1,1"
    )
    error = await failure(charts.import_bars("XYZ", bad.replace("100,1000", "100,9999")))
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    page = await charts.candles("XYZ")
    assert [c.volume for c in page.candles] == [800, 1000, 1500]  # nothing replaced
    assert await count_bars(pg_dsn, "XYZ") == 3


async def test_hourly_import_must_lie_on_its_grid(charts: Any) -> None:
    csv = (
        "time,open,high,low,close,volume\n2024-01-02 10:00,1,2,1,2,5\n2024-01-02 10:30,1,2,1,2,5\n"
    )
    error = await failure(charts.import_bars("FX", csv, resolution="1h"))
    assert "row 2 (line 3)" in error.detail
    assert "does not start a 1h bar" in error.detail


async def test_only_admins_import(charts: Any) -> None:
    error = await failure(charts.import_bars("XYZ", GOOD, admin=False))
    assert error.grpc_code == grpc.StatusCode.PERMISSION_DENIED


async def test_header_must_name_the_columns(charts: Any) -> None:
    error = await failure(charts.import_bars("XYZ", "date,o,h,l,c,v\n2024-01-02,1,2,1,2,3\n"))
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in error.detail


async def test_the_command_line(charts: Any, pg_dsn: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD)
    bad.write_text(GOOD + "2024-01-08,5,4,6,5,1\n")
    assert await asyncio.to_thread(importer.main, ["abc", str(bad), "--dsn", pg_dsn]) == 1
    assert await count_bars(pg_dsn, "ABC") == 0
    assert await asyncio.to_thread(importer.main, ["abc", str(good), "--dsn", pg_dsn]) == 0
    assert await count_bars(pg_dsn, "ABC") == 3


def parquet_of(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.to_parquet(out, engine="pyarrow", index=False)
    return out.getvalue()


def good_frame() -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(GOOD))
    # Timestamps as Parquet holds them: midnight New York, with its zone.
    frame["time"] = pd.to_datetime(frame["time"]).dt.tz_localize("America/New_York")
    return frame


async def import_parquet(charts: Any, symbol: str, data: bytes, **fields: Any) -> Any:
    return await charts.stub.ImportBars(
        charts_pb2.ImportBarsRequest(symbol=symbol, parquet=data, **fields),
        metadata=charts.admin("importer"),
    )


async def test_a_parquet_file_imports_like_its_csv(charts: Any) -> None:
    done = await import_parquet(charts, "PQ", parquet_of(good_frame()), timezone="America/New_York")
    assert (done.rows, done.written) == (3, 3)
    await charts.import_bars("CSV", GOOD, timezone="America/New_York")
    pq, csv = await charts.all_candles("PQ"), await charts.all_candles("CSV")
    assert [(c.time, c.close) for c in pq] == [(c.time, c.close) for c in csv]


async def test_a_bad_parquet_row_is_named_like_a_csv_one(charts: Any, pg_dsn: str) -> None:
    frame = good_frame()
    frame.loc[1, "high"] = 90.0  # row 2: high below low 101
    error = await failure(
        import_parquet(charts, "PQB", parquet_of(frame), timezone="America/New_York")
    )
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.detail.startswith("row 2 (line 3): high 90.0 is below low 101.0")
    assert await count_bars(pg_dsn, "PQB") == 0


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"parquet": b"not parquet"}, "not a Parquet file"),
        ({"csv": GOOD.encode(), "parquet": b"x"}, "exactly one of csv and parquet"),
        ({}, "exactly one of csv and parquet"),
    ],
)
async def test_parquet_refusals(charts: Any, fields: dict[str, Any], words: str) -> None:
    error = await failure(
        charts.stub.ImportBars(
            charts_pb2.ImportBarsRequest(symbol="PQX", **fields),
            metadata=charts.admin("importer"),
        )
    )
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.detail
