"""AI and memory end to end through the gateway: `/api/ai/*`, `WS /ws/ai-chat`, the SSE stream and
`/api/memory/*` only, against the real services (auth, memory, ai) and the local llama.cpp server.

Covered: a streamed answer arrives as ordered chunks ending with done + usage (WebSocket and
SSE); the same question again is a cache hit with the same answer; a cancelled generation frees
its connection for the next one; RAG over an admin's knowledge document cites its id; a user's
memories stay theirs; multi-agent answers keep each agent's part; async generation reaches
`succeeded`; usage and conversations show what happened; the admin performance view is refused
to a free user; bad input is a 4xx with a message. The protocol is docs/ai.md. These test
structure and behaviour, not the small model's wisdom.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

PASSWORD = "correct horse battery staple"
ERROR_KEYS = {"error", "detail", "status_code"}
WAIT_S = 60.0  # one generation on a loaded 2-core machine


class User:
    def __init__(self, email: str, user_id: str, token: str) -> None:
        self.email = email
        self.id = user_id
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_user(api: httpx.AsyncClient, prefix: str = "ai") -> User:
    email = f"{prefix}.{secrets.token_hex(5)}@example.com"
    registered = await api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return User(email, registered.json()["id"], await login(api, email))


async def login(api: httpx.AsyncClient, email: str) -> str:
    response = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["tokens"]["access_token"]
    return token


def error_of(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["status_code"] == response.status_code
    assert body["detail"], body
    return body


def unique_question(topic: str = "stocks") -> str:
    # Unique per run so no earlier run's cache answers it.
    return f"In one sentence, what are {topic}? (ref {secrets.token_hex(4)})"


async def ask(api: httpx.AsyncClient, user: User, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/ai/chat", json=body, headers=user.headers, timeout=WAIT_S * 2)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ws_url(gateway_url: str) -> str:
    return gateway_url.replace("http://", "ws://").replace("https://", "wss://") + "/ws/ai-chat"


async def ready(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    assert frame["type"] == "ready", frame
    return frame


async def frames_until_done(ws: ClientConnection) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


# -- chat, streaming, cache --------------------------------------------------------------------
async def test_websocket_streams_ordered_chunks_then_done_and_a_repeat_is_a_cache_hit(
    api: httpx.AsyncClient, gateway_url: str
) -> None:
    user = await new_user(api)
    question = unique_question()
    async with connect(ws_url(gateway_url), additional_headers=user.headers) as ws:
        assert (await ready(ws))["user_id"] == user.id
        await ws.send(json.dumps({"type": "chat", "message": question, "mode": "fast", "id": "q1"}))
        frames = await frames_until_done(ws)
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "start", frames
        assert all(f.get("id") == "q1" for f in frames), frames
        assert kinds[-1] == "done", frames
        assert set(kinds[1:-1]) <= {"chunk", "sources"}, kinds
        chunks = [f["content"] for f in frames if f["type"] == "chunk"]
        assert chunks, frames
        done = frames[-1]
        # The chunks, in order, are the answer (the fast mode has no RAG footer).
        assert "".join(chunks) == done["answer"]
        usage = done["usage"]
        assert usage["prompt_tokens"] > 0, usage
        assert usage["completion_tokens"] > 0, usage
        assert usage["cached"] is False

        await ws.send(json.dumps({"type": "chat", "message": question, "mode": "fast"}))
        again = await frames_until_done(ws)
        assert again[0]["type"] == "start", again[0]
        assert again[0]["cached"] is True, again[0]
        assert again[-1]["type"] == "done"
        assert again[-1]["answer"] == done["answer"]
        assert again[-1]["usage"]["cached"] is True
        assert "".join(f["content"] for f in again if f["type"] == "chunk") == done["answer"]


async def test_sse_stream_is_start_chunks_done(api: httpx.AsyncClient) -> None:
    user = await new_user(api)
    events: list[tuple[str, dict[str, Any]]] = []
    async with api.stream(
        "POST",
        "/api/ai/chat/stream",
        json={"message": unique_question("bonds"), "mode": "fast"},
        headers=user.headers,
        timeout=WAIT_S * 2,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    names = [name for name, _ in events]
    assert names[0] == "start", names
    assert names[-1] == "done", names
    assert "chunk" in names
    assert "".join(d["content"] for n, d in events if n == "chunk") == events[-1][1]["answer"]


async def test_cancel_stops_the_generation_and_the_connection_carries_on(
    api: httpx.AsyncClient, gateway_url: str
) -> None:
    user = await new_user(api)
    async with connect(ws_url(gateway_url), additional_headers=user.headers) as ws:
        await ready(ws)
        long = "Write a long, detailed essay about the history of stock exchanges. " + (
            secrets.token_hex(4)
        )
        await ws.send(
            json.dumps({"type": "chat", "message": long, "mode": "deep_thinking", "id": "long"})
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert first["type"] == "start", first
        await ws.send(json.dumps({"type": "cancel"}))
        # The answer stops with `cancelled` (chunks already on the way may come first).
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            assert frame["type"] in ("chunk", "sources", "error"), frame
            if frame["type"] == "error":
                assert (frame["error"], frame.get("id")) == ("cancelled", "long"), frame
                break
        await ws.send(json.dumps({"type": "chat", "message": unique_question(), "mode": "fast"}))
        frames = await frames_until_done(ws)
        assert frames[-1]["type"] == "done", frames[-1]


# -- RAG, memories, multi-agent ----------------------------------------------------------------
async def test_rag_answer_cites_the_knowledge_document(
    api: httpx.AsyncClient, server_side: Any
) -> None:
    admin = await new_user(api, "ai-admin")
    await server_side.promote(admin.email, "admin")
    admin.token = await login(api, admin.email)
    doc_id = f"doc-{secrets.token_hex(4)}"
    stored = await api.post(
        "/api/memory/records",
        json={
            "namespace": "knowledge",
            "records": [
                {
                    "id": doc_id,
                    "text": "The Zorblax index tracks the 40 largest moon-mining companies.",
                    "metadata": {"source": "e2e"},
                }
            ],
        },
        headers=admin.headers,
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["ids"] == [doc_id]

    user = await new_user(api)
    found = await api.post(
        "/api/memory/search",
        json={"namespace": "knowledge", "query": "What does the Zorblax index track?"},
        headers=user.headers,
    )
    assert found.status_code == 200, found.text
    assert found.json()["hits"][0]["id"] == doc_id

    # A user cannot write the shared namespace.
    refused = await api.post(
        "/api/memory/records",
        json={"namespace": "knowledge", "records": [{"text": "mine now"}]},
        headers=user.headers,
    )
    error_of(refused, 403)

    answer = await ask(
        api, user, message="What does the Zorblax index track?", mode="learn", no_cache=True
    )
    assert doc_id in [source["id"] for source in answer["sources"]], answer
    assert doc_id in answer["answer"], answer["answer"]


async def test_memories_are_private(api: httpx.AsyncClient) -> None:
    alice, bob = await new_user(api, "alice"), await new_user(api, "bob")
    stored = await api.post(
        "/api/memory/records",
        json={"namespace": "memories", "records": [{"text": "I hold 30 shares of Tesla."}]},
        headers=alice.headers,
    )
    assert stored.status_code == 200, stored.text
    record_id = stored.json()["ids"][0]
    query = {"namespace": "memories", "query": "How many Tesla shares do I hold?"}
    mine = await api.post("/api/memory/search", json=query, headers=alice.headers)
    assert [hit["id"] for hit in mine.json()["hits"]] == [record_id], mine.text
    theirs = await api.post("/api/memory/search", json=query, headers=bob.headers)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["hits"] == [], theirs.text


async def test_multi_agent_answer_keeps_each_part(api: httpx.AsyncClient) -> None:
    user = await new_user(api)
    answer = await ask(
        api, user, message=unique_question("dividends"), agents=["fast", "trade_buddy"]
    )
    parts = {part["agent"]: part for part in answer["parts"]}
    assert set(parts) == {"fast", "trade_buddy"}, answer
    for agent, part in parts.items():
        assert part["content"], part
        assert f"### {agent}" in answer["answer"]
        assert part["content"] in answer["answer"]


# -- jobs, usage, conversations, admin ------------------------------------------------------------
async def test_async_generation_job_succeeds(api: httpx.AsyncClient) -> None:
    user = await new_user(api)
    queued = await api.post(
        "/api/ai/generate?async=true",
        json={"message": unique_question("options"), "mode": "fast"},
        headers=user.headers,
    )
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued"
    job_id = queued.json()["job_id"]
    deadline = time.monotonic() + WAIT_S * 2
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = await api.get(f"/api/ai/jobs/{job_id}", headers=user.headers)
        assert got.status_code == 200, got.text
        job = got.json()
        if job["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.5)
    assert job["status"] == "succeeded", job
    assert job["answer"], job
    assert job["usage"]["completion_tokens"] > 0, job
    # One job system: the generation ran as a worker job, readable through the jobs API and
    # the documents' root shape too.
    worker_job = (await api.get(f"/api/jobs/{job_id}", headers=user.headers)).json()
    assert (worker_job["type"], worker_job["status"]) == ("ai.generate", "completed")
    assert worker_job["result"]["answer"] == job["answer"]
    document = (await api.get(f"/jobs/{job_id}", headers=user.headers)).json()
    assert document["status"] == "completed"
    other = await new_user(api)
    error_of(await api.get(f"/api/ai/jobs/{job_id}", headers=other.headers), 404)
    error_of(await api.get("/api/ai/jobs/not-a-uuid", headers=user.headers), 400)


async def test_usage_conversations_and_admin_views(
    api: httpx.AsyncClient, server_side: Any
) -> None:
    user = await new_user(api)
    first = await ask(api, user, message=unique_question("ETFs"), mode="fast")
    follow = await ask(
        api, user, message="And why?", mode="fast", conversation_id=first["conversation_id"]
    )
    assert follow["conversation_id"] == first["conversation_id"]

    usage = (await api.get("/api/ai/usage", headers=user.headers)).json()
    assert usage["requests"] >= 2, usage
    assert usage["completion_tokens"] > 0

    listed = (await api.get("/api/ai/conversations", headers=user.headers)).json()
    ids = [c["conversation_id"] for c in listed["conversations"]]
    assert first["conversation_id"] in ids, listed
    got = await api.get(f"/api/ai/conversations/{first['conversation_id']}", headers=user.headers)
    assert [m["role"] for m in got.json()["messages"]] == ["user", "assistant"] * 2, got.text
    deleted = await api.delete(
        f"/api/ai/conversations/{first['conversation_id']}", headers=user.headers
    )
    assert deleted.status_code == 204, deleted.text
    error_of(
        await api.get(f"/api/ai/conversations/{first['conversation_id']}", headers=user.headers),
        404,
    )

    error_of(await api.get("/api/ai/admin/performance", headers=user.headers), 403)
    admin = await new_user(api, "ai-admin")
    await server_side.promote(admin.email, "admin")
    admin.token = await login(api, admin.email)
    perf = await api.get("/api/ai/admin/performance", headers=admin.headers)
    assert perf.status_code == 200, perf.text
    assert perf.json()["requests"] >= 2, perf.json()


async def test_mode_preference_and_bad_input(api: httpx.AsyncClient) -> None:
    user = await new_user(api)
    modes = (await api.get("/api/ai/mode", headers=user.headers)).json()
    names = {m["name"] for m in modes["modes"]}
    assert {"fast", "deep_thinking", "trade_buddy", "stock_analysis"} <= names, modes
    set_mode = await api.post("/api/ai/mode", json={"mode": "trade_buddy"}, headers=user.headers)
    assert set_mode.status_code == 200, set_mode.text
    assert (await api.get("/api/ai/mode", headers=user.headers)).json()["mode"] == "trade_buddy"

    bad = [
        {"message": ""},
        {"message": "x" * 100_000},
        {"message": "hi", "mode": "telepathy"},
        {"message": "hi", "model": "gpt-9"},
        {"message": "hi", "surprise": True},
        {"message": "hi", "agents": ["fast"]},
    ]
    for body in bad:
        # Every one is a validation error (400), the gateway's or the AI service's.
        error_of(await api.post("/api/ai/chat", json=body, headers=user.headers), 400)
    error_of(await api.post("/api/ai/mode", json={"mode": "telepathy"}, headers=user.headers), 400)
    error_of(await api.post("/api/ai/chat", json={"message": "hi"}), 401)


async def test_analyze_over_bars(api: httpx.AsyncClient) -> None:
    user = await new_user(api)
    bars = [
        {
            "time": f"2024-01-{day:02d}T00:00:00Z",
            "open": 100 + day,
            "high": 102 + day,
            "low": 99 + day,
            "close": 101 + day,
            "volume": 1000 + 10 * day,
        }
        for day in range(1, 29)
    ]
    answer = await api.post(
        "/api/ai/analyze",
        json={"symbol": "ACME", "bars": bars, "question": "Is the trend up?"},
        headers=user.headers,
        timeout=WAIT_S * 2,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"]
    broken = [dict(bars[0], high=1.0), *bars[1:]]
    error_of(
        await api.post(
            "/api/ai/analyze", json={"symbol": "ACME", "bars": broken}, headers=user.headers
        ),
        400,
    )


pytestmark = pytest.mark.timeout(300)
