"""WebSocket close codes (RFC 6455 leaves 4000-4999 to applications); docs/chat.md and
docs/ai.md document them, with the same meaning on every socket."""

from __future__ import annotations

CLOSE_NORMAL = 1000
CLOSE_SERVER_ERROR = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013
CLOSE_UNAUTHENTICATED = 4001
CLOSE_FORBIDDEN_ORIGIN = 4003
CLOSE_IDLE = 4008
CLOSE_TOO_SLOW = 4009
CLOSE_RATE_LIMITED = 4029

# Close reasons must fit a control frame (125 bytes).
MAX_REASON_CHARS = 120
