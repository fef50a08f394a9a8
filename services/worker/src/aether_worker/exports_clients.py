"""Every service's ExportMyData as the worker calls it for a `gdpr.export` job: the worker's own
service token and the user named (aether_common.delegation), so each service answers with the
user's data exactly as for the user's own call. One generic client per peer (the kit's
ServiceClient with that peer's descriptor); ExportMyData is a read, so the channel may retry it.

    clients = export_clients({"auth": s.auth_grpc_target, "ai": s.ai_grpc_target, ...})
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from aether.ai.v1 import ai_pb2, ai_pb2_grpc
from aether.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether.chat.v1 import chat_pb2, chat_pb2_grpc
from aether.memory.v1 import memory_pb2, memory_pb2_grpc
from aether_common.delegation import acting_for
from aether_common.grpc import Peer, ServiceClient
from aether_common.identity import use_identity

METHOD = "ExportMyData"
# A user's whole history in one answer: more than an ordinary read's deadline.
EXPORT_DEADLINE_S = 120.0
# The services refuse a document over 64 MiB (<SVC>_EXPORT_MAX_BYTES); gRPC's client default
# is 4 MiB. The margin: the answer's framing.
MAX_ANSWER_BYTES = 65 * 1024 * 1024


def _peer(name: str, pb2: ModuleType, grpc_module: ModuleType, service: str) -> Peer[Any]:
    stub = getattr(grpc_module, f"{service}Stub")
    return Peer(name, pb2.DESCRIPTOR.services_by_name[service], stub, idempotent=(METHOD,))


# The services that hold a user's data, in the order the job asks them (auth first: its
# document holds the address the mail goes to).
PEERS: dict[str, tuple[Peer[Any], type[Any]]] = {
    "auth": (
        _peer("auth", auth_pb2, auth_pb2_grpc, "AuthService"),
        auth_pb2.ExportMyDataRequest,
    ),
    "chat": (
        _peer("chat", chat_pb2, chat_pb2_grpc, "ChatService"),
        chat_pb2.ExportMyDataRequest,
    ),
    "ai": (_peer("ai", ai_pb2, ai_pb2_grpc, "AiService"), ai_pb2.ExportMyDataRequest),
    "alerts": (
        _peer("alerts", alerts_pb2, alerts_pb2_grpc, "AlertsService"),
        alerts_pb2.ExportMyDataRequest,
    ),
    "memory": (
        _peer("memory", memory_pb2, memory_pb2_grpc, "MemoryService"),
        memory_pb2.ExportMyDataRequest,
    ),
}
SERVICES = tuple(PEERS)


class ExportClient(ServiceClient[Any]):
    """Component: the channel to one service for its ExportMyData (readiness does not wait on
    it: only `gdpr.export` jobs use it, and they retry while it is away)."""

    def __init__(self, service: str, target: str, *, timeout_s: float = EXPORT_DEADLINE_S) -> None:
        peer, self._request = PEERS[service]
        super().__init__(
            peer,
            target,
            timeout_s=timeout_s,
            needs_peer=False,
            name=f"{service}-export",
            channel_options=[("grpc.max_receive_message_length", MAX_ANSWER_BYTES)],
        )
        self.service_name = service

    async def export(self, *, user_id: str, service: str, token: str) -> str:
        """The JSON document the service holds about `user_id`, asked by `service` (the
        worker's client id) with its own `token`; the typed error when it refuses or is away."""
        with use_identity(acting_for(user_id, service=service, token=token)):
            answer = await self.call(self.stub.ExportMyData, self._request())
        document: str = answer.json
        return document


def export_clients(
    targets: Mapping[str, str], *, timeout_s: float = EXPORT_DEADLINE_S
) -> dict[str, ExportClient]:
    """One client per service in `targets` (keys: names in SERVICES)."""
    unknown = sorted(set(targets) - set(PEERS))
    if unknown:
        raise ValueError(f"no ExportMyData known for {unknown}; known: {list(PEERS)}")
    return {name: ExportClient(name, targets[name], timeout_s=timeout_s) for name in targets}
