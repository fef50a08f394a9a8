"""`WS /api/market/stream` frames: what clients send (validated models) and the server frames
the gateway makes itself (`tick` and `bar` are charts' own JSON, forwarded unchanged).

The wire formats are chat's (JSON text, or MessagePack with the `aether.msgpack` subprotocol), so
decoding and the error frame are chat's too; the protocol is docs/charts.md, "Live market
stream".
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter

from aether_common.http import describe_validation_errors
from aether_gateway.chat.frames import BadFrame, decode, error_frame
from aether_gateway.ws.frames import AuthIn, ClientIn, PingIn

__all__ = ["BadFrame", "decode", "error_frame", "parse"]

# charts' ticker rule (aether_charts, and /api/charts/{symbol}), after folding to upper case.
SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,31}")
# In charts' order (finest first): the order intervals are listed in.
INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M")
MAX_SYMBOLS_PER_FRAME = 200
MAX_INTERVALS_PER_FRAME = len(INTERVALS)

# Checked one by one after parsing, so that a bad item gets its own error code and names itself.
RawSymbol = Annotated[str, StringConstraints(min_length=1, max_length=64)]
RawInterval = Annotated[str, StringConstraints(min_length=1, max_length=16)]


class SubscribeIn(ClientIn):
    type: Literal["subscribe"]
    symbols: Annotated[list[RawSymbol], Field(min_length=1, max_length=MAX_SYMBOLS_PER_FRAME)]
    # Bar intervals to follow for these symbols; absent or empty: ticks only.
    intervals: Annotated[list[RawInterval], Field(max_length=MAX_INTERVALS_PER_FRAME)] = []


class UnsubscribeIn(ClientIn):
    type: Literal["unsubscribe"]
    symbols: Annotated[list[RawSymbol], Field(min_length=1, max_length=MAX_SYMBOLS_PER_FRAME)]
    # Only these bar intervals (the ticks go on); absent: the symbols altogether.
    intervals: Annotated[list[RawInterval], Field(max_length=MAX_INTERVALS_PER_FRAME)] | None = None


class PongIn(ClientIn):
    type: Literal["pong"]


ClientFrame = Annotated[
    AuthIn | SubscribeIn | UnsubscribeIn | PingIn | PongIn, Field(discriminator="type")
]
CLIENT_FRAME = TypeAdapter(ClientFrame)
CLIENT_TYPES = frozenset(("auth", "subscribe", "unsubscribe", "ping", "pong"))


def parse(obj: dict[str, Any]) -> Any:
    """A decoded object -> its client frame model, or BadFrame saying what is wrong."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadFrame("invalid_frame", "frame has no 'type'")
    if kind not in CLIENT_TYPES:
        raise BadFrame("unknown_type", f"unknown frame type {kind[:32]!r}")
    try:
        return CLIENT_FRAME.validate_python(obj)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        detail = describe_validation_errors(errors()) if callable(errors) else str(exc)
        raise BadFrame("invalid_frame", detail[:500], op=kind) from None


def fold_symbol(raw: str) -> str | None:
    """A client's symbol as charts stores it (upper case); None when it breaks charts' rule."""
    symbol = raw.strip().upper()
    return symbol if SYMBOL_RE.fullmatch(symbol) else None


def check_intervals(raw: list[str], op: str) -> tuple[str, ...]:
    """Known intervals, deduplicated, in charts' order; BadFrame `invalid_interval` otherwise."""
    unknown = [i for i in raw if i not in INTERVALS]
    if unknown:
        raise BadFrame(
            "invalid_interval",
            f"unknown interval {unknown[0][:16]!r}: one of {' '.join(INTERVALS)}",
            op=op,
        )
    wanted = set(raw)
    return tuple(i for i in INTERVALS if i in wanted)
