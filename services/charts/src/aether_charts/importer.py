"""`python -m aether_charts.importer SYMBOL FILE`: import a CSV or Parquet (`.parquet`, `.pq`)
file of bars for one symbol.

The file has columns named time, open, high, low, close, volume. A bad row refuses the whole
file (its row number is printed) and nothing is written; bars already stored at the same times
are replaced. The database is CHARTS_DATABASE_URL (or AETHER_DATABASE_URL, or --dsn); the
service's migrations are applied first. Exit 0 on success, 1 on a refused file, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from aether_charts.service import Imported, import_file
from aether_common.errors import AetherError
from aether_common.postgres import PostgresDatabase

MAX_ROWS = 10_000_000
PARQUET = (".parquet", ".pq")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aether_charts.importer", description=__doc__)
    p.add_argument("symbol", help="ticker, e.g. AAPL, BRK.B, EURUSD")
    p.add_argument("file", type=Path, help="CSV or Parquet (.parquet, .pq) file of bars")
    p.add_argument("--name", default="", help="a new symbol's name")
    p.add_argument("--timezone", default="", help="a new symbol's exchange time zone (UTC)")
    p.add_argument("--resolution", default="", help="a new symbol's bar resolution (1d)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("CHARTS_DATABASE_URL") or os.environ.get("AETHER_DATABASE_URL"),
        help="PostgreSQL DSN (default: CHARTS_DATABASE_URL or AETHER_DATABASE_URL)",
    )
    return p


async def run(args: argparse.Namespace) -> Imported:
    database = PostgresDatabase(
        args.dsn, service="charts", migrations=files("aether_charts") / "migrations", max_size=2
    )
    await database.start()
    try:
        return await import_file(
            database,
            args.symbol,
            args.file.read_bytes(),
            name=args.name,
            timezone=args.timezone,
            resolution=args.resolution,
            max_rows=MAX_ROWS,
            file_format="parquet" if args.file.suffix.lower() in PARQUET else "csv",
        )
    finally:
        await database.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.dsn:
        sys.stderr.write("importer: no database: set CHARTS_DATABASE_URL or pass --dsn\n")
        return 2
    if not args.file.is_file():
        sys.stderr.write(f"importer: no such file: {args.file}\n")
        return 2
    try:
        done = asyncio.run(run(args))
    except AetherError as exc:
        sys.stderr.write(f"importer: {args.symbol}: {exc.detail}\n")
        return 1
    sys.stdout.write(f"{args.symbol.upper()}: {done.rows} rows, {done.written} bars written\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
