"""ai's AiService as the worker calls it: ChatWhole for a user, with the worker's own service
token and the user named (aether_common.delegation), so the answer, its usage, the conversation
and the cache are the user's, as for their own `POST /api/ai/chat`.

Never retried by the channel: an answer spends model time, and an `ai_busy` UNAVAILABLE (every
model slot taken) must reach the job, which retries with backoff instead of piling onto a full
queue.
"""

from __future__ import annotations

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether_common.delegation import acting_for
from aether_common.grpc import Peer, ServiceClient
from aether_common.identity import use_identity

AI = Peer("ai", ai_pb2.DESCRIPTOR.services_by_name["AiService"], ai_pb2_grpc.AiServiceStub)


class AiClient(ServiceClient["ai_pb2_grpc.AiServiceAsyncStub"]):
    """Component: the channel to ai (readiness does not wait on it: only `ai.generate` jobs use
    it, and they retry while ai is away). `answer_timeout_s`: a whole answer's deadline, queue
    wait plus generation (a minute or more on CPU)."""

    def __init__(self, target: str, *, timeout_s: float, answer_timeout_s: float) -> None:
        super().__init__(AI, target, timeout_s=timeout_s, needs_peer=False)
        self.answer_timeout_s = answer_timeout_s

    async def chat_whole(
        self, request: ai_pb2.ChatRequest, *, user_id: str, service: str, token: str
    ) -> ai_pb2.ChatWholeResponse:
        """One whole answer for `user_id`, asked by `service` with its own `token`; the typed
        error of aether_common.errors when ai refuses or is away."""
        with use_identity(acting_for(user_id, service=service, token=token)):
            return await self.call(
                self.stub.ChatWhole,
                ai_pb2.ChatWholeRequest(request=request),
                deadline_s=self.answer_timeout_s,
            )
