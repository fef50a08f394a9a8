"""Conversions to charts.proto messages that need no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether_charts.schemas import _timestamp


@pytest.mark.parametrize(
    "value",
    [
        datetime(1800, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 13, 45, 7, 123_456, tzinfo=UTC),
        datetime(2199, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2024, 3, 10, 9, 30, tzinfo=timezone(timedelta(hours=-5))),  # an offset
        datetime(2024, 3, 10, 9, 30, 0, 1),  # naive: UTC, as FromDatetime takes it
    ],
)
def test_timestamp_is_what_from_datetime_makes(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert _timestamp(value) == expected
