"""What every socket's frames share: `Frame` (a server frame encoded once, whatever the number of
connections it goes to), the client frames both protocols have (`auth`, `ping`) and `BadFrame`.

Each socket's own frames are in its package (chat/frames.py, ai/frames.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgpack  # type: ignore[import-untyped]
import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints

ASGI_SEND = "websocket.send"

RequestId = Annotated[str, StringConstraints(max_length=128)]


class Frame:
    """One server frame: its JSON text and, only when a MessagePack client needs it, its
    MessagePack bytes, each made once whatever the number of connections it goes to. The ASGI
    send messages are built once too and shared (the server only reads them)."""

    __slots__ = ("_msgpack", "json_send", "kind", "obj", "seq")

    def __init__(self, kind: str, obj: dict[str, Any], text: str, seq: int = 0) -> None:
        self.kind = kind
        self.obj = obj
        self.seq = seq
        self.json_send: dict[str, Any] = {"type": ASGI_SEND, "text": text}
        self._msgpack: dict[str, Any] | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Frame:
        return cls(str(obj["type"]), obj, orjson.dumps(obj).decode())

    @property
    def msgpack_send(self) -> dict[str, Any]:
        if self._msgpack is None:
            self._msgpack = {"type": ASGI_SEND, "bytes": msgpack.packb(self.obj)}
        return self._msgpack

    def message(self, binary: bool) -> dict[str, Any]:
        """The ASGI `websocket.send` message for a JSON (text) or MessagePack (binary) client."""
        return self.msgpack_send if binary else self.json_send

    def __repr__(self) -> str:
        return f"Frame({self.json_send['text'][:80]})"


PING = Frame.of({"type": "ping"})
PONG = Frame.of({"type": "pong"})


class BadFrame(Exception):
    """A client frame that cannot be used: an error frame answers it, the connection goes on."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class ClientIn(BaseModel):
    """Base of every client frame: strict, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Echoed on the frames answering this one (ack, error...), so a client can match them.
    id: RequestId | None = None


class AuthIn(ClientIn):
    """The first frame when the upgrade carried no `Authorization` header; later, a fresh token
    before the current one expires."""

    type: Literal["auth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class PingIn(ClientIn):
    type: Literal["ping"]
