"""An HTTP endpoint that receives webhooks, for the tests of what sends them: it answers 500
to the first `fail_first` requests, then 200, and keeps every request (headers, body).

    async with webhook_receiver(fail_first=2) as receiver:
        ...  # register receiver.url; then receiver.requests, receiver.verify(secret, n)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class WebhookReceiver:
    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/aether?x=1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((headers, body))
        status = "500 Oops" if len(self.requests) <= self.fail_first else "200 OK"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    def signed(self, n: int, secret: str) -> bool:
        """Whether request `n` carries a `t=...,v1=...` signature of its body by `secret`
        (HMAC-SHA256 of "<t>.<body>", as the alerts service signs)."""
        headers, body = self.requests[n]
        fields = [part.split("=", 1) for part in headers["x-aether-signature"].split(",")]
        t = next(v for k, v in fields if k == "t")
        expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(expected, v) for k, v in fields if k == "v1")


@asynccontextmanager
async def webhook_receiver(fail_first: int = 0) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=fail_first)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
