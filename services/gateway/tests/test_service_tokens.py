"""Service tokens (auth's IssueServiceToken) are for service-to-service calls: the gateway
refuses them on every public route and socket with a 401 saying so. They are refused by the one
verifier every route and socket goes through, so one route and one socket stand for all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SERVICE_CLAIMS = {
    "sub": "service:alerts",
    "sid": "service:alerts",
    "client_id": "alerts",
    "roles": ["service"],
    "perms": ["charts:read"],
    "plan": None,
}
REFUSAL = "service tokens are for service-to-service calls only"


async def test_a_route_refuses_a_service_token(
    gateway: Any, token: Callable[..., str], error_shape: Callable[..., str]
) -> None:
    response = await gateway.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {token(**SERVICE_CLAIMS)}"}
    )
    assert REFUSAL in error_shape(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # A route that needs no caller refuses it too, rather than serving the service anonymously.
    public = await gateway.get(
        "/api/auth/oauth/providers", headers={"Authorization": f"Bearer {token(**SERVICE_CLAIMS)}"}
    )
    assert REFUSAL in error_shape(public, 401, "invalid_token")


async def test_a_socket_refuses_a_service_token(
    serve_gateway: Any, fake_chat: Any, token: Callable[..., str]
) -> None:
    gw = await serve_gateway(chat_grpc_target=fake_chat.address)
    headers = {"Authorization": f"Bearer {token(**SERVICE_CLAIMS)}"}
    async with connect(gw.ws_url, additional_headers=headers, open_timeout=5) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (frame["type"], frame["code"]) == ("error", "invalid_token")
        assert REFUSAL in frame["detail"], frame
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed:
            pass
    assert ws.close_code == 4001
