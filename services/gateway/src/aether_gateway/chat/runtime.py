"""What the chat side holds open for the gateway's lifetime: the ChatService channel and the
hub (with its one fan-out pub/sub connection). Made in the app's lifespan (resources.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aether_common.access_tokens import AccessToken
from aether_common.logging import get_logger
from aether_gateway.chat.client import ChatClient, ChatNotConfigured
from aether_gateway.chat.hub import ChatHub
from aether_gateway.config import GatewaySettings
from aether_gateway.rate_limit import RatePolicy
from aether_gateway.ws.connection import frame_limit

log = get_logger(__name__)


@dataclass
class ChatRuntime:
    chat: ChatClient | None
    hub: ChatHub | None
    ws_policy: RatePolicy

    @classmethod
    def open(cls, settings: GatewaySettings) -> ChatRuntime:
        policy = RatePolicy(settings.chat_ws_limits(), None)
        if settings.chat_grpc_target is None:
            log.warning("chat is not configured (AETHER_CHAT_GRPC_TARGET): chat answers 503")
            return cls(None, None, policy)
        chat = ChatClient(settings.chat_grpc_target, timeout_s=settings.chat_timeout_s)
        chat.open()
        hub = ChatHub(
            chat,
            settings.fanout_redis_url,
            settings.chat_fanout_prefix,
            history_page=min(settings.chat_history_page, settings.chat_ws_queue_frames // 2),
            gap_grace_s=settings.chat_gap_grace_s,
            max_rooms=settings.chat_ws_max_rooms,
            heartbeat_s=settings.chat_ws_heartbeat_s,
            idle_timeout_s=settings.chat_ws_idle_timeout_s,
            presence_interval_s=settings.chat_presence_interval_s,
            token_leeway_s=settings.jwt_leeway_s,
            # Alert notifications ride on the chat socket, when alerts is configured.
            notify_url=settings.alerts_notify_url if settings.alerts_grpc_target else None,
            notify_prefix=settings.alerts_notify_prefix,
        )
        return cls(chat, hub, policy)

    def start(self) -> None:
        if self.hub is not None:
            self.hub.start()

    async def close(self) -> None:
        if self.hub is not None:
            await self.hub.close()
        if self.chat is not None:
            await self.chat.stop()

    def client(self) -> ChatClient:
        if self.chat is None:
            raise ChatNotConfigured()
        return self.chat

    def ws_limit(self, token: AccessToken) -> int | None:
        """Client frames per window for this caller's connections (None: unlimited)."""
        return frame_limit(self.ws_policy, token)
