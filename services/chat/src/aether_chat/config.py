"""The chat service's settings (env prefix `CHAT_`; the devstack's `AETHER_*` names also work).

Required values have no default: MongoDB (URL and database), Redis, Kafka and auth's gRPC
address (where the JWKS that verifies callers' tokens comes from). The S3 server and keys of the
archive are the platform's `AETHER_S3_*` (aether_common.s3); its bucket is `CHAT_S3_BUCKET`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from aether_common.s3 import S3Settings


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class ChatSettings(S3Settings):
    model_config = SettingsConfigDict(env_prefix="CHAT_")

    service_name: ClassVar[str] = "chat"

    # -- datastores ------------------------------------------------------------------------------
    mongo_url: str = Field(validation_alias=_alias("CHAT_MONGO_URL", "AETHER_MONGO_URL"))
    mongo_database: str = Field(
        validation_alias=_alias("CHAT_MONGO_DATABASE", "AETHER_MONGO_DATABASE"),
        min_length=1,
        max_length=63,
    )
    mongo_pool_size: int = Field(default=100, ge=1, le=1000)
    # A send retried this many times on write conflicts (another replica wrote the same room).
    transaction_attempts: int = Field(default=20, ge=1, le=100)
    redis_url: str = Field(validation_alias=_alias("CHAT_REDIS_URL", "AETHER_REDIS_URL"))
    # Short: fan-out and caches must not stall a send behind a slow Redis.
    redis_timeout_s: float = Field(default=1.0, gt=0)
    kafka_bootstrap: str = Field(
        validation_alias=_alias("CHAT_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Kafka topics (and the consumer group) are `<topic_prefix><name>`: empty in production.
    topic_prefix: str = ""
    consumer_group: str = "chat"
    # While events flow the outbox relay polls this often. Every poll is a query on MongoDB,
    # which also carries the sends: 50 ms keeps Kafka latency low at a small fraction of the
    # datastore (5 ms, the library default, cost half the local server's send throughput).
    outbox_poll_s: float = Field(default=0.05, gt=0, le=5)
    # Otherwise it polls this often, and at once when this replica commits events; events that
    # another replica committed wait this long at most. No change stream: it cost the local
    # server ~0.3-0.7 ms of CPU per insert, every message paying it.
    outbox_idle_poll_s: float = Field(default=0.25, gt=0, le=60)
    # Caches, presence and version keys start with this (tests give each test its own).
    redis_prefix: str = "chat:"
    # Fan-out channels are `<fanout_prefix>room:<room_id>` (docs/chat.md; the gateway agrees).
    fanout_prefix: str = "chat:fanout:"

    # -- who is calling (tokens verified with auth's JWKS, as the gateway does) -----------------
    auth_grpc_target: str = Field(
        validation_alias=_alias("CHAT_AUTH_GRPC_TARGET", "AETHER_AUTH_GRPC_TARGET")
    )
    auth_timeout_s: float = Field(default=5.0, gt=0)
    # Must match auth's AUTH_ISSUER / AUTH_AUDIENCE (their defaults are these).
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)
    # Services whose calls may name the user they act for (`x-aether-on-behalf-of`,
    # aether_common.delegation): the worker runs `gdpr.export` jobs for users that way.
    delegating_services: list[str] = Field(default_factory=lambda: ["worker"])

    # -- limits ------------------------------------------------------------------------------
    max_message_chars: int = Field(default=4000, ge=1, le=100_000)
    # Sends waiting for the same room commit together, at most this many per transaction.
    send_batch_max: int = Field(default=100, ge=1, le=1000)
    max_mentions: int = Field(default=50, ge=0, le=1000)
    max_room_name_chars: int = Field(default=100, ge=1, le=1000)
    max_room_description_chars: int = Field(default=1000, ge=0, le=10_000)
    max_initial_members: int = Field(default=100, ge=0, le=10_000)
    history_default_limit: int = Field(default=50, ge=1)
    history_max_limit: int = Field(default=100, ge=1, le=1000)
    rooms_default_limit: int = Field(default=50, ge=1)
    rooms_max_limit: int = Field(default=200, ge=1, le=1000)
    members_default_limit: int = Field(default=100, ge=1)
    members_max_limit: int = Field(default=500, ge=1, le=5000)
    # CheckMembership: room ids per call; GetPresence: members reported per room.
    max_check_rooms: int = Field(default=500, ge=1, le=5000)
    max_presence_members: int = Field(default=1000, ge=1, le=10_000)
    # ListMyRooms reads at most this many memberships of one user.
    max_rooms_per_user: int = Field(default=5000, ge=1)

    # -- the GDPR export (ExportMyData): refused, never cut short, past these ---------------------
    # Messages (and memberships, invitations) read per section.
    export_max_records: int = Field(default=200_000, ge=1)
    # The JSON document's size (the worker's channel must accept as much).
    export_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # -- caches, presence --------------------------------------------------------------------------
    # ListMyRooms and the latest history page; every change invalidates them at once.
    cache_ttl_s: int = Field(default=300, ge=1)
    # A connected user is online this long after the gateway's last heartbeat.
    presence_ttl_s: int = Field(default=60, ge=5)
    # Ephemeral membership answers for typing indicators (never for reads or writes).
    typing_membership_ttl_s: float = Field(default=10.0, ge=0)

    # -- retention ---------------------------------------------------------------------------------
    # Messages older than this many days (counted to a UTC midnight) are archived, then deleted
    # (archive.py; docs/chat.md "Retention and the archive").
    message_retention_days: int = Field(default=365, ge=1)
    # The fallback run on every replica (the worker schedules the same run daily); 0: off.
    retention_interval_s: float = Field(default=3600.0, ge=0)
    # The archive's bucket (made at the first run in dev and test; Terraform makes production's).
    s3_bucket: str = "aether-chat-archive"
    # Messages removed per delete round trip once their object is written.
    archive_delete_batch: int = Field(default=500, ge=1, le=10_000)
