"""The import's fast path (columns.py) against the row path (bars.parse_csv): a file either
takes the fast path with exactly the row path's bars, or is left to the row path."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from aether_charts import bars as b
from aether_charts import columns
from aether_charts.columns import BarColumns
from aether_common.errors import ValidationFailed

NY, UTC_ZONE = ZoneInfo("America/New_York"), ZoneInfo("UTC")
HEADER = "time,open,high,low,close,volume\n"


def same(data: str, resolution: str, zone: ZoneInfo) -> BarColumns | None:
    fast = columns.read(data.encode(), resolution, zone, max_rows=1000)
    try:
        slow = BarColumns.of(b.parse_csv(data, resolution, zone, max_rows=1000))
    except ValidationFailed:
        assert fast is None, "the fast path took a file the row path refuses"
        return None
    if fast is not None:
        assert fast.times == slow.times
        for field in ("open", "high", "low", "close", "volume"):
            assert getattr(fast, field).tolist() == getattr(slow, field).tolist(), field
    return fast


@pytest.mark.parametrize(
    ("data", "resolution", "zone"),
    [
        (HEADER + "2024-01-03,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,1.5,0\n", "1d", NY),
        # Daily bars across the DST change, local dates.
        (HEADER + "2024-03-08,1,2,1,1,1\n2024-03-11,1,2,1,1,1\n", "1d", NY),
        (
            HEADER + "2024-03-08T00:00:00-05:00,1,2,1,1,1\n2024-03-11T00:00:00-04:00,1,2,1,1,1\n",
            "1d",
            NY,
        ),
        (
            HEADER + "2024-01-02T10:00:00Z,1,2,1,1,1\n2024-01-02T10:01:00+00:00,1,2,1,1,1\n",
            "1m",
            UTC_ZONE,
        ),
        ("Volume,Close,Low,High,Open,Time\n5,1,1,2,1,2024-01-02 10:00\n", "1m", UTC_ZONE),
        (HEADER + "20240102,1,2,1,1,1\n", "1d", UTC_ZONE),
        (
            HEADER + "2024-01-02T10:00:00,1,2,1,1,1\n\n2024-01-02T11:00:00,1,2,1,1,1\n",
            "1h",
            UTC_ZONE,
        ),
    ],
)
def test_good_files_take_the_fast_path_with_the_row_paths_bars(
    data: str, resolution: str, zone: ZoneInfo
) -> None:
    assert same(data, resolution, zone) is not None


@pytest.mark.parametrize(
    "rows",
    [
        "2024-01-02,1,2,3,1,1\n",  # high < low
        "2024-01-02,1,2,1,1,-1\n",  # negative volume
        "2024-01-02,0,2,1,1,1\n",  # a zero price
        "not a time,1,2,1,1,1\n",
        "2024-01-02,1,2,1,1,nan\n",
        "2024-01-02,1,2,1,1,1\n2024-01-02,1,2,1,1,1\n",  # a repeated time
        "2024-01-02T10:30:00,1,2,1,1,1\n",  # not a day's start
        "2024-01-02,1,2,1,1\n",  # a field short
        "2024-01-02,1,2,1,1,1\n2024-01-03T00:00:00Z,1,2,1,1,1\n",  # offsets mixed
        "1700-01-02,1,2,1,1,1\n",
        "2024-03-10T02:30:00,1,2,1,1,1\n",  # a local time DST skips
    ],
)
def test_anything_else_is_left_to_the_row_path(rows: str) -> None:
    resolution = "1h" if "02:30" in rows else "1d"
    assert columns.read((HEADER + rows).encode(), resolution, NY, max_rows=1000) is None
    same(HEADER + rows, resolution, NY)  # and the row path answers as it always did


def test_too_many_rows_is_the_row_paths_refusal() -> None:
    data = HEADER + "".join(f"2024-01-{d:02d},1,2,1,1,1\n" for d in range(2, 9))
    assert columns.read(data.encode(), "1d", UTC_ZONE, max_rows=3) is None
    with pytest.raises(ValidationFailed, match="at most 3 rows"):
        b.parse_csv(data, "1d", UTC_ZONE, max_rows=3)
