"""Pure functions: ids, times, validation, frames, settings (no I/O)."""

from __future__ import annotations

import ast
import inspect
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from aether_chat import batching, ids, schemas, service, validation
from aether_chat.config import ChatSettings
from aether_chat.realtime import Changes
from aether_chat.repository import MessageRecord
from aether_common.errors import ValidationFailed
from aether_common.settings import SettingsError, load_settings


def test_ids_are_uuid7_and_sort_by_time() -> None:
    earlier = ids.new_id(1_700_000_000_000)
    later = ids.new_id(1_700_000_000_001)
    parsed = uuid.UUID(earlier)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert earlier < later
    assert len({ids.new_id(1_700_000_000_000) for _ in range(1000)}) == 1000


def test_id_floor_splits_ids_by_their_time() -> None:
    moment = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    floor = ids.id_floor(moment)
    assert ids.new_id(ms - 1) < floor <= ids.new_id(ms) < ids.new_id(ms + 1)


def test_times_are_utc_milliseconds_in_rfc3339() -> None:
    now = ids.now()
    assert now.tzinfo is not None
    assert now.microsecond % 1000 == 0
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert ids.rfc3339(moment) == "2026-01-02T03:04:05.678Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert ids.rfc3339(plus_two) == "2026-01-02T03:04:05.678Z"


@pytest.mark.parametrize("value", ["", "nope", "123", str(uuid.uuid4()) + "x", "../etc"])
def test_bad_room_ids(value: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        validation.room_id(value)
    assert raised.value.field_errors.keys() == {"room_id"}


def test_room_ids_are_normalised() -> None:
    value = str(uuid.uuid4())
    assert validation.room_id(value.upper()) == value


def test_limits() -> None:
    assert validation.limit(0, default=50, maximum=100) == 50
    assert validation.limit(0, default=500, maximum=100) == 100
    assert validation.limit(100, default=50, maximum=100) == 100
    for bad in (-1, 101):
        with pytest.raises(ValidationFailed):
            validation.limit(bad, default=50, maximum=100)


def test_content_and_ids() -> None:
    assert validation.content("x" * 4000, 4000) == "x" * 4000
    with pytest.raises(ValidationFailed, match="4001 characters"):
        validation.content("x" * 4001, 4000)
    assert validation.client_msg_id("").startswith("srv-")
    assert validation.client_msg_id("01HZX-abc:1") == "01HZX-abc:1"
    assert validation.user_ids(["a", "b", "a"], "mentions", 5) == ["a", "b"]


def test_page_tokens_round_trip_and_garbage_is_refused() -> None:
    token = validation.encode_token([123, "room"])
    assert "=" not in token
    assert validation.decode_token(token) == [123, "room"]
    for bad in ("%%%", "x" * 600, "bm90IGpzb24"):
        with pytest.raises(ValidationFailed):
            validation.decode_token(bad)


def test_frames_are_serialised_once_as_compact_json() -> None:
    message = MessageRecord(
        id="m",
        room_id="r",
        seq=7,
        sender_id="u",
        client_msg_id="c",
        content="hé",
        mentions=("v",),
        reply_to_seq=3,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    changes = Changes()
    changes.publish("r", schemas.message_frame(message))
    room_id, kind, frame = changes.frames[0]
    assert (room_id, kind) == ("r", "message")
    assert orjson.loads(frame) == {
        "type": "message",
        "room_id": "r",
        "seq": 7,
        "message": {
            "message_id": "m",
            "room_id": "r",
            "seq": 7,
            "sender_id": "u",
            "client_msg_id": "c",
            "content": "hé",
            "mentions": ["v"],
            "reply_to_seq": 3,
            "created_at": "2026-01-01T00:00:00.000Z",
            "edited_at": None,
            "deleted": False,
        },
    }
    pb = schemas.message_pb(message)
    assert pb.created_at.ToDatetime(UTC) == message.created_at
    assert not pb.HasField("edited_at")


def test_settings_name_every_missing_required_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AETHER_MONGO_URL", "AETHER_MONGO_DATABASE", "AETHER_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AETHER_ENV", "test")
    with pytest.raises(SettingsError) as raised:
        load_settings(ChatSettings)
    message = str(raised.value)
    for name in (
        "CHAT_MONGO_URL",
        "CHAT_MONGO_DATABASE",
        "CHAT_REDIS_URL",
        "CHAT_KAFKA_BOOTSTRAP",
        "CHAT_AUTH_GRPC_TARGET",
    ):
        assert name in message


def test_settings_defaults_and_platform_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AETHER_ENV": "dev",
        "AETHER_MONGO_URL": "mongodb://127.0.0.1:1",
        "AETHER_MONGO_DATABASE": "aether_chat",
        "AETHER_REDIS_URL": "redis://127.0.0.1:1",
        "AETHER_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "AETHER_AUTH_GRPC_TARGET": "127.0.0.1:2",
        "CHAT_MAX_MESSAGE_CHARS": "500",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(ChatSettings)
    assert settings.max_message_chars == 500
    assert (settings.jwt_issuer, settings.jwt_audience) == ("aether-auth", "aether")
    assert settings.fanout_prefix == "chat:fanout:"
    assert settings.cache_ttl_s == 300
    assert settings.message_retention_days == 365


def test_the_service_takes_and_returns_records_not_protobuf() -> None:
    """Protobuf is read and built at the edge (grpc.py, schemas.py, events.py, consumers.py)."""
    for module in (service, batching):
        tree = ast.parse(inspect.getsource(module))
        imported = [
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or "", *(alias.name for alias in node.names)]
            )
        ]
        wire = [n for n in imported if n.endswith("_pb2") or n.startswith(("aether.", "google."))]
        assert wire == [], f"{module.__name__} imports {wire}"
