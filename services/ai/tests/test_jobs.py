"""Async generation: SubmitJob stores the request, the JobRunner answers it (not streamed), and
GetJob shows the result to its owner only."""

from __future__ import annotations

from typing import Any

import grpc

from aether.ai.v1 import ai_pb2


async def test_a_submitted_job_is_answered_in_the_background(ai: Any, kit: Any) -> None:
    user, other = ai.user(), ai.user("other")
    submitted = await ai.stub.SubmitJob(
        ai_pb2.SubmitJobRequest(request=ai_pb2.ChatRequest(message="What is a REIT?", mode="fast")),
        metadata=ai.auth(user),
    )
    job_id = submitted.job.job_id
    assert submitted.job.status == ai_pb2.JOB_STATUS_QUEUED

    async def finished() -> bool:
        job = await ai.stub.GetJob(ai_pb2.GetJobRequest(job_id=job_id), metadata=ai.auth(user))
        return job.job.status in (ai_pb2.JOB_STATUS_SUCCEEDED, ai_pb2.JOB_STATUS_FAILED)

    await kit.eventually(finished, within=120)
    job = (await ai.stub.GetJob(ai_pb2.GetJobRequest(job_id=job_id), metadata=ai.auth(user))).job
    assert job.status == ai_pb2.JOB_STATUS_SUCCEEDED, job.error
    assert job.answer.strip()
    # Not streamed: the usage is what the endpoint reported.
    assert job.usage.prompt_tokens > 0
    assert 0 < job.usage.completion_tokens <= 16
    assert job.usage.model == "small"
    assert job.HasField("finished_at")
    conversation = await ai.stub.GetConversation(
        ai_pb2.GetConversationRequest(conversation_id=job.conversation_id),
        metadata=ai.auth(user),
    )
    assert [m.role for m in conversation.messages] == ["user", "assistant"]
    assert conversation.messages[1].content == job.answer
    usage = await ai.stub.GetUsage(ai_pb2.GetUsageRequest(), metadata=ai.auth(user))
    assert usage.requests == 1

    error = await kit.failure(
        ai.stub.GetJob(ai_pb2.GetJobRequest(job_id=job_id), metadata=ai.auth(other))
    )
    assert error.grpc_code is grpc.StatusCode.NOT_FOUND


async def test_a_bad_job_is_refused_at_submission(ai: Any, kit: Any) -> None:
    user = ai.user()
    for request in (
        ai_pb2.SubmitJobRequest(),
        ai_pb2.SubmitJobRequest(request=ai_pb2.ChatRequest(message="")),
        ai_pb2.SubmitJobRequest(request=ai_pb2.ChatRequest(message="hi", mode="telepathy")),
        ai_pb2.SubmitJobRequest(request=ai_pb2.ChatRequest(message="hi", conversation_id="7")),
    ):
        error = await kit.failure(ai.stub.SubmitJob(request, metadata=ai.auth(user)))
        assert error.grpc_code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.detail
