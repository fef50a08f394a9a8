"""The export's shared rules: a section or a document past its limit is refused, never cut."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import orjson
import pytest

from aether_common.data_export import ExportDocument, ExportTooLarge, collect, encode


async def numbers(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n


async def test_collect_keeps_every_record_up_to_the_limit() -> None:
    assert await collect(numbers(3), section="rules", limit=3) == [0, 1, 2]


async def test_collect_refuses_more_than_the_limit() -> None:
    with pytest.raises(ExportTooLarge) as refused:
        await collect(numbers(4), section="rules", limit=3)
    assert refused.value.grpc_code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.error_code == "export_too_large"
    assert "rules" in refused.value.detail
    assert refused.value.metadata == {"section": "rules", "limit": "3"}


def test_encode_writes_the_header_and_refuses_a_document_too_large() -> None:
    document = ExportDocument(service="chat", user_id="alice")
    text = encode(document, max_bytes=1000)
    decoded = orjson.loads(text)
    assert decoded["service"] == "chat"
    assert decoded["version"] == 1
    assert decoded["user_id"] == "alice"
    assert decoded["exported_at"]
    with pytest.raises(ExportTooLarge):
        encode(document, max_bytes=len(text) - 1)
