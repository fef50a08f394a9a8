"""The device a request came from, as the gateway saw it: recorded with logins and sessions and
carried in auth's events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str = ""
    user_agent: str = ""
