"""ExportMyData (the GDPR export) against the real service, PostgreSQL and model: a user's
document holds their conversations with every message, their request log and daily usage, their
mode and their jobs in ai's own table, and nothing of another user's; the worker acting for the
user (aether_common.delegation) gets the same document; a caller with no token gets none."""

from __future__ import annotations

import json
from typing import Any

import grpc

from aether.ai.v1 import ai_pb2
from aether_ai.export import VERSION
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_devstack.testkit import eventually, failure

SERVICE_CLAIMS: dict[str, Any] = {"roles": ["service"], "perms": [], "plan": None}


async def export(ai: Any, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    answer = await ai.stub.ExportMyData(ai_pb2.ExportMyDataRequest(), metadata=metadata)
    document: dict[str, Any] = json.loads(answer.json)
    return document


async def test_the_export_holds_the_users_data_and_no_one_elses(ai: Any) -> None:
    alice, bob = ai.user("alice"), ai.user("bob")
    first = await ai.chat_whole(alice, "What is a stock?", mode="fast")
    await ai.chat_whole(
        alice, "And a bond?", mode="fast", conversation_id=first.started.conversation_id
    )
    await ai.stub.SetMode(ai_pb2.SetModeRequest(mode="learn"), metadata=ai.auth(alice))
    job = await ai.stub.SubmitJob(
        ai_pb2.SubmitJobRequest(request=ai_pb2.ChatRequest(message="What is a REIT?")),
        metadata=ai.auth(alice),
    )
    bobs = await ai.chat_whole(bob, "Bob's secret question", mode="fast")

    async def answered() -> ai_pb2.Job | None:
        got = await ai.stub.GetJob(
            ai_pb2.GetJobRequest(job_id=job.job.job_id), metadata=ai.auth(alice)
        )
        return got.job if got.job.status == ai_pb2.JOB_STATUS_SUCCEEDED else None

    done = await eventually(answered, within=60, what="ai's job answered")
    document = await export(ai, ai.auth(alice))

    assert (document["service"], document["version"], document["user_id"]) == ("ai", VERSION, alice)
    assert document["preferences"]["mode"] == "learn"
    # Her chat's conversation and the job's (answered, so it has one of its own).
    by_id = {c["id"]: c for c in document["conversations"]}
    assert set(by_id) == {first.started.conversation_id, done.conversation_id}
    assert by_id[done.conversation_id]["messages"][0]["content"] == "What is a REIT?"
    conversation = by_id[first.started.conversation_id]
    assert [(m["role"], m["content"]) for m in conversation["messages"]][::2] == [
        ("user", "What is a stock?"),
        ("user", "And a bond?"),
    ]
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"] * 2
    assert conversation["messages"][1]["content"] == first.done.answer
    # Two answered chats (the job may have answered too by now: its request row is hers).
    chats = [r for r in document["requests"] if r["kind"] == "chat"]
    assert len(chats) == 2
    assert {r["conversation_id"] for r in chats} == {first.started.conversation_id}
    assert sum(d["requests"] for d in document["usage_daily"]) == len(document["requests"])
    [exported_job] = document["jobs"]
    assert (exported_job["id"], exported_job["message"]) == (job.job.job_id, "What is a REIT?")
    # Nothing of Bob's, anywhere in it.
    text = json.dumps(document)
    assert "Bob's secret question" not in text
    assert bobs.started.conversation_id not in text
    assert bob not in text

    # Bob's own export is his, and a user with nothing gets an empty, well-formed document.
    theirs = await export(ai, ai.auth(bob))
    assert [c["id"] for c in theirs["conversations"]] == [bobs.started.conversation_id]
    assert theirs["jobs"] == []
    assert theirs["preferences"] == {"mode": None, "updated_at": None}
    empty = await export(ai, ai.auth(ai.user("carol")))
    assert (empty["conversations"], empty["requests"], empty["usage_daily"]) == ([], [], [])


async def test_the_worker_acting_for_the_user_gets_the_same_document(ai: Any) -> None:
    alice = ai.user("alice")
    await ai.chat_whole(alice, "What is a stock?", mode="fast")
    worker = ai.auth("service:worker", **SERVICE_CLAIMS)

    own = await export(ai, ai.auth(alice))
    delegated = await export(ai, (*worker, (ON_BEHALF_OF_KEY, alice)))

    own.pop("exported_at"), delegated.pop("exported_at")
    assert delegated == own
    assert delegated["conversations"]
    # The worker as itself holds nothing here; another service may not act for her.
    assert (await export(ai, worker))["conversations"] == []
    refused = await failure(
        ai.stub.ExportMyData(
            ai_pb2.ExportMyDataRequest(),
            metadata=(*ai.auth("service:alerts", **SERVICE_CLAIMS), (ON_BEHALF_OF_KEY, alice)),
        )
    )
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED


async def test_no_token_no_export(ai: Any) -> None:
    refused = await failure(ai.stub.ExportMyData(ai_pb2.ExportMyDataRequest()))
    assert refused.grpc_code is grpc.StatusCode.UNAUTHENTICATED
