"""Chat end to end through the gateway: REST `/api/chat/*` and `WS /api/chat/connect` only.

Users register and log in through `/api/auth` like any client. Covered: two members see each
other's messages in order (JSON and MessagePack clients, header and auth-frame login); a
non-member can neither read history, send nor subscribe; a reconnect with the last seen seq gets
the missed messages exactly once, in order, before live ones; users on two gateway processes
talk; every acknowledged message survives a SIGKILL of the chat service while messages flow, and
the room serves again within 5 s of its restart; bad frames and bad tokens get an error frame or
a close code while other connections carry on.
The protocol is docs/chat.md ("The client WebSocket protocol").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

PASSWORD = "correct horse battery staple"
ERROR_KEYS = {"error", "detail", "status_code"}
WAIT_S = 15.0  # any single expected frame; generous for a loaded 2-core machine
REPLY_TYPES = {"ack", "error", "subscribed", "unsubscribed", "pong"}
CLOSE_UNAUTHENTICATED = 4001

pytestmark = pytest.mark.usefixtures("chat_ready")


# -- accounts (through /api/auth, like test_auth_e2e) ----------------------------------------------
def unique_email(prefix: str) -> str:
    return f"{prefix}.{secrets.token_hex(5)}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class User:
    def __init__(self, email: str, user_id: str, token: str) -> None:
        self.email = email
        self.id = user_id
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def new_user(api: httpx.AsyncClient, prefix: str = "chat") -> User:
    email = unique_email(prefix)
    registered = await api.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": prefix}
    )
    assert registered.status_code == 201, registered.text
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return User(email, registered.json()["id"], login.json()["tokens"]["access_token"])


def error_of(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The one error shape, with one of the given statuses."""
    assert response.status_code in statuses, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["status_code"] == response.status_code, body
    assert body["error"], body
    assert body["detail"], body
    return body


# -- REST ------------------------------------------------------------------------------------------
async def create_room(
    api: httpx.AsyncClient, owner: User, *members: User, visibility: str = "private"
) -> str:
    response = await api.post(
        "/api/chat/room",
        json={
            "name": f"room {secrets.token_hex(3)}",
            "visibility": visibility,
            "member_ids": [m.id for m in members],
        },
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    room = response.json()
    room = room.get("room", room)
    assert room["owner_id"] == owner.id, room
    room_id: str = room["room_id"]
    # Private: `member_ids` are invited; each one joins (public rooms add them at once).
    for member in members:
        joined = await api.post(f"/api/chat/rooms/{room_id}/join", headers=member.headers)
        assert joined.status_code == 200, joined.text
    return room_id


async def post_message(
    api: httpx.AsyncClient, user: User, room_id: str, content: str
) -> dict[str, Any]:
    response = await api.post(
        "/api/chat/message",
        json={"room_id": room_id, "client_msg_id": new_id(), "content": content},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    message: dict[str, Any] = body.get("message", body)
    return message


async def history(
    api: httpx.AsyncClient, user: User, room_id: str, after_seq: int = 0
) -> list[dict[str, Any]]:
    """Every message after `after_seq`, following the pages."""
    messages: list[dict[str, Any]] = []
    while True:
        response = await api.get(
            "/api/chat/history",
            params={"room_id": room_id, "after_seq": after_seq, "limit": 100},
            headers=user.headers,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        messages += page["messages"]
        if not page["has_more"] or not page["messages"]:
            return messages
        after_seq = page["messages"][-1]["seq"]


def new_id() -> str:
    return secrets.token_hex(8)


# -- WebSocket client ------------------------------------------------------------------------------
def ws_url(gateway_url: str) -> str:
    return gateway_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + (
        "/api/chat/connect"
    )


class Peer:
    """One WebSocket connection: every frame it received, in order, read by a background task
    (which answers the server's heartbeat pings, like a real client)."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.frames: list[dict[str, Any]] = []
        self.raw_kinds: list[type] = []  # str (text frame) or bytes (binary frame), per frame
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        gateway_url: str,
        user: User | None,
        *,
        via: str = "header",
        binary: bool = False,
        token: str | None = None,
        path_suffix: str = "",
    ) -> Peer:
        """`via="header"`: Authorization on the upgrade; `"frame"`: a first auth frame;
        `"none"`: no credentials at all."""
        headers = bearer(token or user.token) if via == "header" and user else {}
        protocols = [Subprotocol("aether.msgpack" if binary else "aether.json")]
        ws = await connect(
            ws_url(gateway_url) + path_suffix,
            additional_headers=headers,
            subprotocols=protocols,
            compression=None,
            open_timeout=WAIT_S,
        )
        peer = cls(ws, binary)
        if via == "frame" and user:
            await peer.send({"type": "auth", "token": token or user.token})
        return peer

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.raw_kinds.append(type(raw))
                obj = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
                if obj.get("type") == "ping":
                    await self.send({"type": "pong"})
                self.frames.append(obj)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(obj) if self.binary else json.dumps(obj))

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], within: float = WAIT_S, start: int = 0
    ) -> dict[str, Any]:
        """The first frame from the `start`-th on (received already or later) that `match`es."""
        seen = start
        async with asyncio.timeout(within):
            while True:
                for frame in self.frames[seen:]:
                    if match(frame):
                        return frame
                seen = len(self.frames)
                if self.closed.is_set():
                    raise AssertionError(
                        f"closed ({self.close_code} {self.ws.close_reason!r}) before the frame "
                        f"came; got {self.frames[-5:]}"
                    )
                self._changed.clear()
                await self._changed.wait()

    async def until(self, condition: Callable[[], bool], within: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(within):
                while not condition():
                    if self.closed.is_set():
                        raise AssertionError(f"closed ({self.close_code}): {self.frames[-5:]}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out; last frames {self.frames[-5:]}") from None

    async def request(self, obj: dict[str, Any], within: float = WAIT_S) -> dict[str, Any]:
        """Send with a request id; the reply (ack, error, subscribed...) that echoes it."""
        request_id = new_id()
        await self.send(obj | {"id": request_id})
        return await self.wait_for(
            lambda f: f.get("id") == request_id and f.get("type") in REPLY_TYPES, within
        )

    async def ready(self) -> dict[str, Any]:
        return await self.wait_for(lambda f: f["type"] == "ready")

    async def subscribe(self, room_id: str, after_seq: int | None = None) -> dict[str, Any]:
        """Subscribe and wait until caught up (`synced`); the reply frame."""
        cursor: dict[str, Any] = {"room_id": room_id}
        if after_seq is not None:
            cursor["after_seq"] = after_seq
        reply = await self.request({"type": "subscribe", "rooms": [cursor]})
        assert reply["type"] == "subscribed", reply
        assert reply["room_id"] == room_id, reply
        await self.wait_for(lambda f: f["type"] == "synced" and f["room_id"] == room_id)
        return reply

    async def say(self, room_id: str, content: str, client_msg_id: str | None = None) -> Any:
        """A `send` frame; its ack (or error) frame."""
        return await self.request(
            {
                "type": "send",
                "room_id": room_id,
                "client_msg_id": client_msg_id or new_id(),
                "content": content,
            }
        )

    def messages(self, room_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "message" and f["room_id"] == room_id]

    def seqs(self, room_id: str) -> list[int]:
        return [f["seq"] for f in self.messages(room_id)]

    def errors(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "error"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Connections the test opens; closed at its end, whatever happened."""
    opened: list[Peer] = []
    yield opened
    await asyncio.gather(*(p.close() for p in opened), return_exceptions=True)


async def peer(opened: list[Peer], gateway_url: str, user: User | None, **kwargs: Any) -> Peer:
    p = await Peer.open(gateway_url, user, **kwargs)
    opened.append(p)
    return p


def assert_ok_ack(ack: dict[str, Any], room_id: str) -> None:
    assert ack["type"] == "ack", ack
    assert ack["room_id"] == room_id, ack
    assert isinstance(ack["seq"], int), ack
    assert ack["seq"] >= 1, ack
    assert ack["message_id"], ack


# -- messaging -------------------------------------------------------------------------------------
async def test_two_members_see_each_others_messages_in_order(
    api: httpx.AsyncClient, gateway_url: str, peers: list[Peer]
) -> None:
    alice, bob = await asyncio.gather(new_user(api, "alice"), new_user(api, "bob"))
    room = await create_room(api, alice, bob)
    # Alice: JSON, token on the upgrade. Bob: MessagePack, token in a first auth frame.
    a = await peer(peers, gateway_url, alice)
    b = await peer(peers, gateway_url, bob, via="frame", binary=True)
    ready = await b.ready()
    assert ready["user_id"] == bob.id, ready
    assert (await a.ready())["user_id"] == alice.id
    await asyncio.gather(a.subscribe(room), b.subscribe(room))

    sent: list[tuple[User, str, int]] = []
    for n in range(10):
        sender, conn = (alice, a) if n % 2 == 0 else (bob, b)
        content = f"hello {n} from {sender.email}"
        ack = await conn.say(room, content)
        assert_ok_ack(ack, room)
        assert ack["created"] is True, ack
        sent.append((sender, content, ack["seq"]))
    # One more through REST: it reaches the sockets the same way.
    rest = await post_message(api, alice, room, "over REST")
    sent.append((alice, "over REST", rest["seq"]))

    seqs = [s for _, _, s in sent]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # one seq per message, no gaps
    for conn in (a, b):

        def delivered(c: Peer = conn) -> bool:
            return len(c.messages(room)) >= len(sent)

        await conn.until(delivered)
        got = conn.messages(room)
        assert [f["seq"] for f in got] == seqs, [f["seq"] for f in got]
        for frame, (sender, content, seq) in zip(got, sent, strict=True):
            message = frame["message"]
            assert message["seq"] == seq
            assert message["content"] == content
            assert message["sender_id"] == sender.id
            assert message["room_id"] == room
            assert message["deleted"] is False
    assert set(b.raw_kinds) == {bytes}, "a MessagePack client gets binary frames only"
    assert set(a.raw_kinds) == {str}
    await asyncio.sleep(0.3)
    assert len(a.messages(room)) == len(b.messages(room)) == len(sent), "nothing twice"

    stored = await history(api, bob, room)
    assert [(m["seq"], m["content"], m["sender_id"]) for m in stored] == [
        (seq, content, sender.id) for sender, content, seq in sent
    ]
    # A retry of a send (same client_msg_id) is the same message, not a new one.
    first = await a.say(room, "once", client_msg_id="retry-1")
    again = await a.say(room, "once", client_msg_id="retry-1")
    assert again["seq"] == first["seq"], (first, again)
    assert again["message_id"] == first["message_id"]
    assert again["created"] is False
    await b.until(lambda: first["seq"] in b.seqs(room))
    await asyncio.sleep(0.3)
    assert b.seqs(room).count(first["seq"]) == 1


async def test_a_non_member_can_neither_read_send_nor_subscribe(
    api: httpx.AsyncClient, gateway_url: str, peers: list[Peer]
) -> None:
    alice, bob, mallory = await asyncio.gather(
        new_user(api, "alice"), new_user(api, "bob"), new_user(api, "mallory")
    )
    room = await create_room(api, alice, bob)
    await post_message(api, alice, room, "members only")

    read = await api.get("/api/chat/history", params={"room_id": room}, headers=mallory.headers)
    error_of(read, 403)  # the room exists; mallory is not in it
    posted = await api.post(
        "/api/chat/message",
        json={"room_id": room, "client_msg_id": new_id(), "content": "let me in"},
        headers=mallory.headers,
    )
    error_of(posted, 403)
    assert "let me in" not in [m["content"] for m in await history(api, alice, room)]

    m = await peer(peers, gateway_url, mallory)
    refused = await m.request({"type": "subscribe", "rooms": [{"room_id": room, "after_seq": 0}]})
    assert refused["type"] == "error", refused
    assert refused["code"] == "not_member", refused
    assert refused.get("room_id") == room, refused
    send = await m.say(room, "sneaky")
    assert send["type"] == "error", send
    assert send["code"] == "forbidden", send

    # Nothing of the room reaches her afterwards, and her connection still works.
    a = await peer(peers, gateway_url, alice)
    await a.subscribe(room)
    ack = await a.say(room, "after the attempts")
    assert_ok_ack(ack, room)
    await a.until(lambda: ack["seq"] in a.seqs(room))
    pong = await m.request({"type": "ping"})
    assert pong["type"] == "pong", pong
    assert m.messages(room) == []


async def test_a_reconnect_gets_the_missed_messages_once_in_order_before_live_ones(
    api: httpx.AsyncClient, gateway_url: str, peers: list[Peer]
) -> None:
    alice, bob = await asyncio.gather(new_user(api, "alice"), new_user(api, "bob"))
    room = await create_room(api, alice, bob)
    a = await peer(peers, gateway_url, alice)
    b = await peer(peers, gateway_url, bob)
    await asyncio.gather(a.subscribe(room), b.subscribe(room))
    for n in range(3):
        assert_ok_ack(await a.say(room, f"before {n}"), room)
    await b.until(lambda: len(b.messages(room)) == 3)
    last_seen = b.seqs(room)[-1]
    await b.close()

    missed = [(await a.say(room, f"missed {n}"))["seq"] for n in range(120)]  # > one page

    # Back, resuming from the last seq seen, while Alice keeps talking: the live messages must
    # come after the whole backlog, and nothing twice.
    b2 = await peer(peers, gateway_url, bob)
    live: list[int] = []

    async def keep_talking() -> None:
        for n in range(15):
            live.append((await a.say(room, f"live {n}"))["seq"])

    talking = asyncio.create_task(keep_talking())
    await b2.subscribe(room, after_seq=last_seen)
    await talking
    expected = [*missed, *live]
    await b2.until(lambda: len(b2.messages(room)) >= len(expected), within=30)
    await asyncio.sleep(0.3)
    got = b2.seqs(room)
    assert got == list(range(last_seen + 1, last_seen + 1 + len(expected))), got
    assert got == expected
    contents = [f["message"]["content"] for f in b2.messages(room)]
    assert contents[:120] == [f"missed {n}" for n in range(120)]


async def test_users_on_two_gateways_talk(
    api: httpx.AsyncClient, gateway_url: str, second_gateway_url: str, peers: list[Peer]
) -> None:
    alice, bob = await asyncio.gather(new_user(api, "alice"), new_user(api, "bob"))
    room = await create_room(api, alice, bob)
    a = await peer(peers, gateway_url, alice)
    b = await peer(peers, second_gateway_url, bob)
    await asyncio.gather(a.subscribe(room), b.subscribe(room))
    seqs = []
    for n in range(6):
        conn = a if n % 2 == 0 else b
        ack = await conn.say(room, f"across {n}")
        assert_ok_ack(ack, room)
        seqs.append(ack["seq"])
    async with httpx.AsyncClient(base_url=second_gateway_url, timeout=30) as api2:
        seqs.append((await post_message(api2, bob, room, "REST on the second gateway"))["seq"])
    for conn in (a, b):

        def delivered(c: Peer = conn) -> bool:
            return len(c.messages(room)) >= len(seqs)

        await conn.until(delivered)
    await asyncio.sleep(0.3)
    assert a.seqs(room) == seqs
    assert b.seqs(room) == seqs
    assert [f["message"]["content"] for f in a.messages(room)][:6] == [
        f"across {n}" for n in range(6)
    ]


# -- faults ----------------------------------------------------------------------------------------
async def test_no_acknowledged_message_is_lost_when_chat_is_killed(
    api: httpx.AsyncClient, gateway_url: str, service_control: Any, peers: list[Peer]
) -> None:
    alice, bob = await asyncio.gather(new_user(api, "alice"), new_user(api, "bob"))
    room = await create_room(api, alice, bob)
    a = await peer(peers, gateway_url, alice)
    b = await peer(peers, gateway_url, bob)
    await asyncio.gather(a.subscribe(room), b.subscribe(room))

    acked: dict[str, dict[str, Any]] = {}  # client_msg_id -> ack
    refusals: list[dict[str, Any]] = []
    phase = "before"
    after_restart = 0
    restarted_at = first_ack_after = 0.0

    async def talk() -> None:
        """Alice sends one message at a time; a refused one is retried with the same id."""
        nonlocal after_restart, first_ack_after
        pending: str | None = None
        n = 0
        while after_restart < 10:
            client_msg_id = pending or f"m{n:04d}"
            try:
                reply = await a.say(room, f"message {client_msg_id}", client_msg_id)
            except TimeoutError:  # neither ack nor error in time: unknown, retried
                pending = client_msg_id
                continue
            if reply["type"] == "ack":
                acked[client_msg_id] = reply
                pending = None
                n += 1
                if phase == "after":
                    after_restart += 1
                    first_ack_after = first_ack_after or time.monotonic()
            else:
                refusals.append(reply)
                pending = client_msg_id
                await asyncio.sleep(0.2)

    talking = asyncio.create_task(talk())
    try:
        await a.until(lambda: len(acked) >= 10, within=30)
        await asyncio.to_thread(service_control.kill, "chat")
        await asyncio.sleep(1.0)  # sends meanwhile are refused (or wait on the gateway's retry)
        await asyncio.to_thread(service_control.start, "chat")
        restarted_at = time.monotonic()
        phase = "after"
        await asyncio.wait_for(talking, 60)
    finally:
        talking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await talking

    assert refusals, "no send was refused while chat was down: did the kill happen?"
    # The room serves again within 5 s of the restarted process's start, even when the kill left
    # a transaction open on the room (MongoDB ends it within its 3 s lifetime).
    assert 0 < first_ack_after - restarted_at < 5.0, first_ack_after - restarted_at
    for refusal in refusals:
        assert refusal["type"] == "error", refusal
        assert refusal["code"] in ("unavailable", "upstream_unavailable", "timeout"), refusal
    stored = await history(api, bob, room)
    by_client_id = {m["client_msg_id"]: m for m in stored}
    assert len(by_client_id) == len(stored), "a retried send was stored twice"
    for client_msg_id, ack in acked.items():
        message = by_client_id.get(client_msg_id)
        assert message is not None, f"acknowledged message {client_msg_id} ({ack}) is lost"
        assert message["seq"] == ack["seq"], (message, ack)
        assert message["message_id"] == ack["message_id"], (message, ack)
    seqs = [m["seq"] for m in stored]
    assert seqs == list(range(1, len(stored) + 1)), seqs
    # Bob, connected all along, got every stored message once and in order (the gateway fills
    # what the fan-out missed while chat was down from history).
    await b.until(lambda: len(b.messages(room)) >= len(stored), within=30)
    await asyncio.sleep(0.3)
    assert b.seqs(room) == seqs


# -- bad input -------------------------------------------------------------------------------------
async def expect_error(p: Peer, payload: str | bytes, codes: set[str]) -> dict[str, Any]:
    before = len(p.frames)
    await p.ws.send(payload)
    frame = await p.wait_for(lambda f: f["type"] == "error", start=before)
    assert frame["code"] in codes, frame
    assert frame["detail"], frame
    return frame


async def expect_close(p: Peer, code: int = CLOSE_UNAUTHENTICATED) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            await p.closed.wait()
    except TimeoutError:
        raise AssertionError(f"still open; frames {p.frames}") from None
    assert p.close_code == code, (p.close_code, p.ws.close_reason, p.frames)


async def test_bad_frames_and_tokens_get_an_error_or_a_close_and_others_keep_working(
    api: httpx.AsyncClient, gateway_url: str, peers: list[Peer]
) -> None:
    alice, bob = await asyncio.gather(new_user(api, "alice"), new_user(api, "bob"))
    room = await create_room(api, alice, bob)
    other_room = await create_room(api, alice)  # Bob is not in it
    a = await peer(peers, gateway_url, alice)
    await a.subscribe(room)

    # Connections refused at the door: no token at all (nothing sent, then a non-auth frame),
    # a bad token on the upgrade, a bad token in the auth frame, a token in the URL.
    silent = await peer(peers, gateway_url, None, via="none")  # closed after the auth timeout
    rude = await peer(peers, gateway_url, None, via="none")
    await rude.send({"type": "subscribe", "rooms": [{"room_id": room}]})
    forged = await peer(peers, gateway_url, alice, token=alice.token[:-6] + "AAAAAA")
    garbage = await peer(peers, gateway_url, alice, via="frame", token="not-a-jwt")
    in_url = await peer(peers, gateway_url, alice, path_suffix=f"?token={alice.token}")
    for refused in (rude, forged, garbage, in_url):
        await expect_close(refused)
        assert all(f["type"] != "ready" for f in refused.frames), refused.frames

    # One connection that sends everything wrong: each gets an error frame, the socket stays.
    b = await peer(peers, gateway_url, bob)
    await b.ready()
    await expect_error(b, "{not json", {"invalid_frame"})
    await expect_error(b, "[1, 2, 3]", {"invalid_frame"})
    await expect_error(b, json.dumps({"type": "teleport"}), {"unknown_type"})
    await expect_error(b, json.dumps({"no": "type"}), {"invalid_frame"})
    await expect_error(b, json.dumps({"type": "send", "room_id": room}), {"invalid_frame"})
    await expect_error(
        b,
        json.dumps({"type": "send", "room_id": room, "client_msg_id": "x", "content": 7}),
        {"invalid_frame"},
    )
    await expect_error(b, b"\xc1\xff\x00 not msgpack", {"invalid_frame"})
    oversize = json.dumps(
        {"type": "send", "room_id": room, "client_msg_id": "big", "content": "x" * 200_000}
    )
    await expect_error(b, oversize, {"too_large"})
    # A room Bob is not in: send and subscribe are refused, by room.
    # Sending: chat says which (not joined: forbidden; no such room: not_found); subscribing
    # asks only "is Bob a member?", so both rooms are not_member.
    for room_id, send_code in [(other_room, "forbidden"), (str(uuid.uuid4()), "not_found")]:
        not_joined = await b.say(room_id, "hi")
        assert not_joined["type"] == "error", not_joined
        assert not_joined["code"] == send_code, not_joined
        refused_sub = await b.request({"type": "subscribe", "rooms": [{"room_id": room_id}]})
        assert refused_sub["type"] == "error", refused_sub
        assert refused_sub["code"] == "not_member", refused_sub
    assert b.close_code is None, "bad frames must not close the connection"
    pong = await b.request({"type": "ping"})
    assert pong["type"] == "pong", pong

    # The others never noticed: Alice sends, Bob (the one that misbehaved) joins and receives.
    await b.subscribe(room)
    ack = await a.say(room, "still here")
    assert_ok_ack(ack, room)
    for conn in (a, b):

        def delivered(c: Peer = conn) -> bool:
            return ack["seq"] in c.seqs(room)

        await conn.until(delivered)
    assert [f["message"]["content"] for f in b.messages(room)] == ["still here"]
    # The silent one is closed once the auth timeout (5 s by default) passes.
    await expect_close(silent)
