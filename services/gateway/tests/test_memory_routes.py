"""/api/memory/*: each route calls its MemoryService RPC with the caller's token and shapes the
answer; bad input is a 400 before any gRPC call; memory's errors keep their meaning. memory is a
scripted gRPC peer here (FakeMemory in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from aether.memory.v1 import memory_pb2
from aether_common import errors


@pytest.fixture
async def api(start_gateway: Any, fake_memory: Any) -> Any:
    return await start_gateway(memory_grpc_target=fake_memory.address)


@pytest.fixture
def caller(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub='u-ada')}"}


async def test_records_are_upserted_with_their_metadata(
    api: Any, fake_memory: Any, caller: dict[str, str]
) -> None:
    fake_memory.answers["Upsert"] = memory_pb2.UpsertResponse(ids=["n-1", "gen-2"], embedded=1)
    body = {
        "namespace": "memories",
        "records": [
            {"id": "n-1", "text": " I like dojis ", "metadata": {"tags": ["ta"], "stars": 3}},
            {"text": "second"},
        ],
    }
    response = await api.post("/api/memory/records", json=body, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == {"ids": ["n-1", "gen-2"], "embedded": 1}
    (call,) = fake_memory.calls_to("Upsert")
    assert call.request.namespace == "memories"
    first, second = call.request.records
    metadata = Struct()
    metadata.update({"tags": ["ta"], "stars": 3})
    assert first == memory_pb2.Record(id="n-1", text="I like dojis", metadata=metadata)
    assert second == memory_pb2.Record(text="second")
    assert call.metadata["authorization"] == caller["Authorization"]


async def test_records_are_deleted_by_id(
    api: Any, fake_memory: Any, caller: dict[str, str]
) -> None:
    fake_memory.answers["Delete"] = memory_pb2.DeleteResponse(deleted=1)
    response = await api.post(
        "/api/memory/records/delete",
        json={"namespace": "memories", "ids": ["n-1", "n-404"]},
        headers=caller,
    )
    assert response.json() == {"deleted": 1}
    (call,) = fake_memory.calls_to("Delete")
    assert (call.request.namespace, list(call.request.ids)) == ("memories", ["n-1", "n-404"])


async def test_search_forwards_the_filters_and_shapes_the_hits(
    api: Any, fake_memory: Any, caller: dict[str, str]
) -> None:
    created = Timestamp()
    created.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC))
    metadata = Struct()
    metadata.update({"author": "ada"})
    fake_memory.answers["Search"] = memory_pb2.SearchResponse(
        hits=[
            memory_pb2.SearchHit(
                record=memory_pb2.Record(
                    id="m-1",
                    text="buy the dip",
                    metadata=metadata,
                    user_id="u-bob",
                    created_at=created,
                    room_id="r-1",
                ),
                score=0.25,
            )
        ]
    )
    body = {
        "namespace": "chat",
        "query": "dip",
        "limit": 50,
        "room_id": "r-1",
        "created_after": "2025-01-01T00:00:00Z",
        "created_before": "2025-01-03T00:00:00+00:00",
        "min_score": 0.5,
    }
    response = await api.post("/api/memory/search", json=body, headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "hits": [
            {
                "id": "m-1",
                "text": "buy the dip",
                "score": 0.25,
                "metadata": {"author": "ada"},
                "user_id": "u-bob",
                "room_id": "r-1",
                "created_at": "2025-01-02T03:04:05.123456Z",
            }
        ]
    }
    (call,) = fake_memory.calls_to("Search")
    request = call.request
    assert (request.namespace, request.query, request.limit, request.room_id) == (
        "chat",
        "dip",
        50,
        "r-1",
    )
    assert request.min_score == 0.5
    assert request.created_after.ToDatetime() == datetime(2025, 1, 1)
    assert request.created_before.ToDatetime() == datetime(2025, 1, 3)
    await api.post(
        "/api/memory/search", json={"namespace": "knowledge", "query": "x"}, headers=caller
    )
    defaults = fake_memory.calls_to("Search")[1].request
    assert (defaults.limit, defaults.room_id, defaults.HasField("created_after")) == (5, "", False)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/memory/records", {"namespace": "secrets", "records": [{"text": "x"}]}),
        ("/api/memory/records", {"namespace": "memories", "records": []}),
        ("/api/memory/records", {"namespace": "memories", "records": [{"text": ""}]}),
        ("/api/memory/records", {"namespace": "memories", "records": [{"text": "x" * 8001}]}),
        ("/api/memory/records", {"namespace": "memories", "records": [{"text": "x"}] * 257}),
        ("/api/memory/records", {"namespace": "memories", "records": [{"id": "a b", "text": "x"}]}),
        (
            "/api/memory/records",
            {"namespace": "memories", "records": [{"text": "x", "metadata": {"k": "v" * 17_000}}]},
        ),
        ("/api/memory/records", {"namespace": "memories", "records": [{"text": "x", "vec": [1]}]}),
        ("/api/memory/records/delete", {"namespace": "memories", "ids": []}),
        ("/api/memory/records/delete", {"namespace": "memories", "ids": ["ok", "not ok"]}),
        ("/api/memory/search", {"namespace": "memories", "query": ""}),
        ("/api/memory/search", {"namespace": "memories", "query": "x", "limit": 51}),
        ("/api/memory/search", {"namespace": "chat", "query": "x"}),
        ("/api/memory/search", {"namespace": "memories", "query": "x", "min_score": 2}),
        (
            "/api/memory/search",
            {
                "namespace": "memories",
                "query": "x",
                "created_after": "2025-01-02T00:00:00Z",
                "created_before": "2025-01-01T00:00:00Z",
            },
        ),
        (
            "/api/memory/search",
            {"namespace": "memories", "query": "x", "created_after": "2025-01-02"},
        ),
        ("/api/memory/search", {"namespace": "memories", "query": "x", "user_id": "u-1"}),
    ],
)
async def test_bad_input_is_a_400_before_any_call(
    api: Any,
    fake_memory: Any,
    caller: dict[str, str],
    error_shape: Any,
    path: str,
    body: dict[str, Any],
) -> None:
    error_shape(await api.post(path, json=body, headers=caller), 400, "validation")
    assert not fake_memory.calls


async def test_memory_errors_keep_their_meaning(
    api: Any, fake_memory: Any, caller: dict[str, str], error_shape: Any
) -> None:
    fake_memory.answers["Upsert"] = errors.Forbidden("only admins write the knowledge namespace")
    detail = error_shape(
        await api.post(
            "/api/memory/records",
            json={"namespace": "knowledge", "records": [{"text": "x"}]},
            headers=caller,
        ),
        403,
        "forbidden",
    )
    assert "knowledge" in detail
    fake_memory.answers["Search"] = errors.ValidationFailed("room_id: not a member")
    error_shape(
        await api.post(
            "/api/memory/search",
            json={"namespace": "chat", "query": "x", "room_id": "r-9"},
            headers=caller,
        ),
        400,
        "validation",
    )


async def test_memory_routes_need_a_caller(api: Any, fake_memory: Any, error_shape: Any) -> None:
    error_shape(
        await api.post("/api/memory/search", json={"namespace": "memories", "query": "x"}), 401
    )
    assert not fake_memory.calls


async def test_without_memory_configured_routes_answer_503(
    start_gateway: Any, caller: dict[str, str], error_shape: Any
) -> None:
    api = await start_gateway()
    error_shape(
        await api.post(
            "/api/memory/search", json={"namespace": "memories", "query": "x"}, headers=caller
        ),
        503,
        "memory_not_configured",
    )
    assert "memory" not in (await api.get("/api/status")).json()["dependencies"]


async def test_status_reports_memory_health(
    start_gateway: Any, fake_memory: Any, caller: dict[str, str], error_shape: Any
) -> None:
    up = await start_gateway(memory_grpc_target=fake_memory.address)
    assert (await up.get("/api/status")).json()["dependencies"]["memory"]["ok"] is True
    down = await start_gateway(memory_grpc_target="127.0.0.1:1")
    error_shape(
        await down.post(
            "/api/memory/search", json={"namespace": "memories", "query": "x"}, headers=caller
        ),
        503,
        "unavailable",
    )
    assert (await down.get("/api/status")).json()["dependencies"]["memory"]["ok"] is False
