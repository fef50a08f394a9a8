"""The platform documents' own job shapes, at the root path: `POST /generate?async=true` (the
body of `POST /api/ai/chat`) queues an `ai.generate` job, `GET /jobs/{id}` reads any job of the
caller's. Without `async=true`, `/generate` answers at once, as `/api/ai/generate` does."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from aether.worker.v1 import worker_pb2
from aether_gateway.ai import convert as ai_convert
from aether_gateway.ai.routes import ai_of, chat_whole
from aether_gateway.ai.schemas import AnswerOut, ChatIn
from aether_gateway.deps import Caller
from aether_gateway.jobs import ai_generate, convert
from aether_gateway.jobs.routes import JobId, Worker, worker_of
from aether_gateway.jobs.schemas import DocumentJobOut, DocumentJobQueuedOut

router = APIRouter(tags=["jobs"])


@router.post(
    "/generate",
    summary="An AI answer now, or with async=true an ai.generate job (202 {job_id, status})",
    responses={
        200: {"model": AnswerOut, "description": "the answer (async=false)"},
        202: {"model": DocumentJobQueuedOut, "description": "queued; poll GET /jobs/{job_id}"},
    },
)
async def generate(
    body: ChatIn,
    caller: Caller,
    request: Request,
    run_async: Annotated[bool, Query(alias="async")] = False,
) -> Any:
    if not run_async:
        return await chat_whole(ai_of(request), ai_convert.chat_request(body), caller)
    job = await ai_generate.submit(worker_of(request), body, caller)
    queued = DocumentJobQueuedOut(job_id=job.id, status=job.status)
    return JSONResponse(
        queued.model_dump(), status_code=202, headers={"Location": f"/jobs/{job.id}"}
    )


@router.get("/jobs/{job_id}", summary="A job of the caller's, in the documents' shape (GetJob)")
async def get_job(job_id: JobId, caller: Caller, worker: Worker) -> DocumentJobOut:
    request = worker_pb2.GetJobRequest(id=job_id)
    answer = await worker.call(worker.stub.GetJob, request, token=caller.raw)
    return DocumentJobOut.model_validate(convert.document_job(answer.job))
