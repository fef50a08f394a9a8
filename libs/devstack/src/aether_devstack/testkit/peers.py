"""gRPC test peers on real sockets: an auth serving a JWKS, and scripted peers."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from aether.auth.v1 import auth_pb2, auth_pb2_grpc
from aether_common.errors import AetherError
from aether_common.grpc import GrpcServer, create_server
from aether_common.identity import metadata_to_dict
from aether_devstack.testkit.tokens import SigningKey

ServicerT = TypeVar("ServicerT")


@dataclass
class JwksPeer:
    """An AuthService that serves `jwks` (tests may change it) and counts the fetches."""

    jwks: list[dict[str, Any]]
    address: str = ""
    jwks_calls: int = 0


class _JwksServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, peer: JwksPeer) -> None:
        self._peer = peer

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.GetJwksResponse:
        self._peer.jwks_calls += 1
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": self._peer.jwks}))


@asynccontextmanager
async def serve_jwks(*keys: SigningKey) -> AsyncIterator[JwksPeer]:
    """A real gRPC server on a free port (the shared `create_server`, so a service fetches and
    verifies keys exactly as it will against auth); GetJwks is its only RPC."""
    peer = JwksPeer(jwks=[key.jwk for key in keys])
    async with serve(
        "auth",
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        _JwksServicer(peer),  # type: ignore[abstract]  # GetJwks is all a service calls
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    ) as address:
        peer.address = address
        yield peer


@dataclass(frozen=True)
class Call:
    """One RPC a peer received: its method, request and call metadata."""

    method: str
    request: Any
    metadata: dict[str, str]


Script = Message | AetherError | Callable[[Any], Any]


@dataclass
class ScriptedPeer:
    """A gRPC peer for a caller's own tests (edge cases a real service cannot be made to give).

    Each RPC is recorded in `calls` and answers `answers[method]`: a message, an AetherError to
    fail with, or a function of the request (sync or async); an unscripted RPC answers an empty
    response. A call the client cancelled lands in `cancelled`. Subclasses may answer some
    methods themselves (`answer`) and stream others (`streaming`, `stream`)."""

    service: ServiceDescriptor
    answers: dict[str, Script] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancelled_event: asyncio.Event = field(default_factory=asyncio.Event)
    address: str = ""
    streaming: frozenset[str] = frozenset()

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_cancelled(self) -> list[str]:
        async with asyncio.timeout(5.0):
            await self.cancelled_event.wait()
        return self.cancelled

    def empty_response(self, method: str) -> Message:
        output = self.service.methods_by_name[method].output_type
        response: Message = GetMessageClass(output)()
        return response

    async def answer(self, method: str, request: Any) -> Message:
        scripted = self.answers.get(method)
        if isinstance(scripted, AetherError):
            raise scripted
        if isinstance(scripted, Message):
            return scripted
        if scripted is not None:
            result = scripted(request)
            answer: Message = await result if inspect.isawaitable(result) else result
            return answer
        return self.empty_response(method)

    def stream(self, method: str, request: Any) -> AsyncIterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} streams no {method}")

    @contextmanager
    def recording_cancel(self, method: str) -> Iterator[None]:
        try:
            yield
        except asyncio.CancelledError:
            self.cancelled.append(method)
            self.cancelled_event.set()
            raise

    def servicer(self, base: Callable[[], ServicerT]) -> ServicerT:
        """An instance of the generated servicer `base` whose every method answers from here."""

        def unary(name: str) -> Callable[..., Awaitable[Message]]:
            async def method(
                _: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Message:
                self.calls.append(Call(name, request, _metadata(context)))
                with self.recording_cancel(name):
                    return await self.answer(name, request)

            return method

        def streaming(name: str) -> Callable[..., AsyncIterator[Any]]:
            async def method(
                _: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                self.calls.append(Call(name, request, _metadata(context)))
                with self.recording_cancel(name):
                    async for item in self.stream(name, request):
                        yield item

            return method

        methods = {
            name: streaming(name) if name in self.streaming else unary(name)
            for name in self.service.methods_by_name
        }
        generated = cast(type, base)  # the generated servicer class (abstract for mypy)
        servicer: ServicerT = type(f"Scripted{generated.__name__}", (generated,), methods)()
        return servicer


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return metadata_to_dict(context.invocation_metadata())


@asynccontextmanager
async def serve(
    name: str,
    add_to_server: Callable[[Any, grpc.aio.Server], None],
    servicer: object,
    service: ServiceDescriptor,
) -> AsyncIterator[str]:
    """`servicer` on a real socket (the shared `create_server`, so errors cross the wire exactly
    as the real service's will); yields its address."""
    server: GrpcServer = create_server(name, host="127.0.0.1", port=0)
    server.add_service(add_to_server, servicer, service)
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop(grace=0)
