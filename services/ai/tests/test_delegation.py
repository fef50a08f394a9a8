"""A service acting for a user (aether_common.delegation) against the real service and model:
the worker's service token plus `x-aether-on-behalf-of` answers as that user (their usage, their
conversation); another service, a user's token, or the worker once AI_DELEGATING_SERVICES no
longer lists it are refused with PERMISSION_DENIED and leave the user's records alone; a
delegate is never an admin."""

from __future__ import annotations

from typing import Any

import grpc

from aether.ai.v1 import ai_pb2
from aether_common.identity import ON_BEHALF_OF_KEY
from aether_devstack.testkit import failure

SERVICE_CLAIMS: dict[str, Any] = {"roles": ["service"], "perms": [], "plan": None}


def service_token(ai: Any, name: str) -> tuple[tuple[str, str], ...]:
    """A service token's metadata (auth's IssueServiceToken shape)."""
    metadata: tuple[tuple[str, str], ...] = ai.auth(f"service:{name}", **SERVICE_CLAIMS)
    return metadata


def acting_for(metadata: tuple[tuple[str, str], ...], user_id: str) -> tuple[tuple[str, str], ...]:
    return (*metadata, (ON_BEHALF_OF_KEY, user_id))


def chat_request(message: str) -> ai_pb2.ChatWholeRequest:
    return ai_pb2.ChatWholeRequest(request=ai_pb2.ChatRequest(message=message, mode="fast"))


async def usage_of(ai: Any, metadata: tuple[tuple[str, str], ...]) -> ai_pb2.GetUsageResponse:
    answer: ai_pb2.GetUsageResponse = await ai.stub.GetUsage(
        ai_pb2.GetUsageRequest(), metadata=metadata
    )
    return answer


async def test_the_worker_acting_for_a_user_answers_as_that_user(ai: Any) -> None:
    alice = ai.user("alice")
    worker = service_token(ai, "worker")

    answer = await ai.stub.ChatWhole(
        chat_request("What is a stock?"), metadata=acting_for(worker, alice)
    )

    assert answer.done.answer.strip()
    # Alice's usage, read with her own token, holds the request; the worker's own holds nothing.
    usage = await usage_of(ai, ai.auth(alice))
    assert usage.requests == 1
    assert usage.completion_tokens == answer.done.usage.completion_tokens
    assert (await usage_of(ai, worker)).requests == 0
    # The conversation is hers: she reads it, with the answer the worker got.
    conversation = await ai.stub.GetConversation(
        ai_pb2.GetConversationRequest(conversation_id=answer.started.conversation_id),
        metadata=ai.auth(alice),
    )
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "What is a stock?"),
        ("assistant", answer.done.answer),
    ]
    # ... and the worker acting for someone else does not.
    other = await failure(
        ai.stub.GetConversation(
            ai_pb2.GetConversationRequest(conversation_id=answer.started.conversation_id),
            metadata=acting_for(worker, ai.user("bob")),
        )
    )
    assert other.grpc_code is grpc.StatusCode.NOT_FOUND


async def test_other_callers_naming_a_user_are_refused(ai: Any) -> None:
    alice, mallory = ai.user("alice"), ai.user("mallory")
    callers = {
        "another service": service_token(ai, "alerts"),
        "a user's token": ai.auth(mallory),
        "an admin's token": ai.admin(mallory),
    }
    for who, metadata in callers.items():
        refused = await failure(
            ai.stub.ChatWhole(chat_request("What is a bond?"), metadata=acting_for(metadata, alice))
        )
        assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED, who
        assert refused.error_code == "delegation_refused", who
        assert ON_BEHALF_OF_KEY in refused.detail, who
    # Nothing reached the model or alice's records.
    assert (await usage_of(ai, ai.auth(alice))).requests == 0
    listed = await ai.stub.ListConversations(
        ai_pb2.ListConversationsRequest(), metadata=ai.auth(alice)
    )
    assert list(listed.conversations) == []


async def test_a_delegate_is_an_ordinary_user_and_names_a_user(ai: Any) -> None:
    worker = service_token(ai, "worker")
    admin_only = await failure(
        ai.stub.GetPerformance(
            ai_pb2.GetPerformanceRequest(), metadata=acting_for(worker, ai.user("admin"))
        )
    )
    assert admin_only.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    posing = await failure(
        ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=acting_for(worker, "service:auth"))
    )
    assert posing.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
    assert ON_BEHALF_OF_KEY in posing.field_errors


async def test_only_the_services_listed_may_delegate(start_ai: Any) -> None:
    ai = await start_ai(delegating_services=[])
    refused = await failure(
        ai.stub.GetUsage(
            ai_pb2.GetUsageRequest(),
            metadata=acting_for(service_token(ai, "worker"), ai.user("alice")),
        )
    )
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    # Without the header the worker is itself, as before.
    assert (await usage_of(ai, service_token(ai, "worker"))).requests == 0
