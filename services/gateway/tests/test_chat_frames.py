"""Units of the chat side that need no I/O: frame codecs, the RESP parser, the rate log."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from aether.chat.v1 import chat_pb2
from aether_gateway.chat import convert
from aether_gateway.chat import frames as f
from aether_gateway.fanout import RespParser, command
from aether_gateway.ws.connection import SlidingLog
from aether_gateway.ws.frames import Frame


def test_a_frame_is_encoded_once_whatever_the_connections() -> None:
    frame = Frame.of({"type": "typing", "room_id": "r", "user_id": "u", "typing": True})
    assert frame.message(False) is frame.message(False)
    packed = frame.message(True)
    assert packed is frame.message(True)  # made on first use, then shared
    assert msgpack.unpackb(packed["bytes"]) == frame.obj
    assert (
        frame.message(False)["text"]
        == '{"type":"typing","room_id":"r","user_id":"u","typing":true}'
    )


@pytest.mark.parametrize(
    ("text", "data", "code"),
    [
        ("nope", None, "invalid_frame"),
        ("42", None, "invalid_frame"),
        (None, b"\x93\x01\x02\x03", "invalid_frame"),  # a msgpack array, not an object
        ("x" * 100, None, "too_large"),
    ],
)
def test_decode_refuses_what_is_not_an_object(
    text: str | None, data: bytes | None, code: str
) -> None:
    with pytest.raises(f.BadFrame) as caught:
        f.decode(text, data, max_bytes=64)
    assert caught.value.code == code


def test_parse_validates_by_type() -> None:
    frame = f.parse({"type": "subscribe", "rooms": [{"room_id": "r-1", "after_seq": 4}]})
    assert isinstance(frame, f.SubscribeIn)
    assert frame.rooms[0].after_seq == 4
    with pytest.raises(f.BadFrame, match="unknown frame type"):
        f.parse({"type": "nuke"})
    with pytest.raises(f.BadFrame) as caught:
        f.parse({"type": "subscribe", "rooms": []})
    assert (caught.value.code, caught.value.op) == ("invalid_frame", "subscribe")
    with pytest.raises(f.BadFrame):
        f.parse({"type": "typing", "room_id": "r", "typing": "yes"})  # strict: no coercion


def test_resp_parser_handles_split_and_batched_replies() -> None:
    wire = (
        command(b"message", b"chan", b"{}") + b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n+OK\r\n"
    )
    parser = RespParser()
    replies: list[Any] = []
    for index in range(len(wire)):  # one byte at a time
        parser.feed(wire[index : index + 1])
        while (reply := parser.gets()) is not False:
            replies.append(reply)
    assert replies == [[b"message", b"chan", b"{}"], [b"subscribe", b"c", 1], b"OK"]
    parser.feed(b"-ERR nope\r\n$-1\r\n")
    error = parser.gets()
    assert isinstance(error, Exception)
    assert parser.gets() is None


def test_sliding_log_admits_limit_per_any_window() -> None:
    log = SlidingLog(limit=2, window_s=10)
    assert log.hit(0.0) == 0
    assert log.hit(1.0) == 0
    assert log.hit(2.0) == pytest.approx(8.0)
    assert log.hit(10.5) == 0  # the first one left the window
    assert log.hit(10.6) == pytest.approx(0.4)


def test_history_messages_look_like_published_ones() -> None:
    message = chat_pb2.Message(message_id="m", room_id="r", seq=2, sender_id="u", content="c")
    message.created_at.FromSeconds(1_700_000_000)
    frame = convert.message_frame(message)
    assert frame["type"] == "message"
    assert frame["message"]["created_at"] == "2023-11-14T22:13:20.000Z"
    assert frame["message"]["edited_at"] is None
    assert list(frame["message"]) == [
        "message_id",
        "room_id",
        "seq",
        "sender_id",
        "client_msg_id",
        "content",
        "mentions",
        "reply_to_seq",
        "created_at",
        "edited_at",
        "deleted",
    ]
