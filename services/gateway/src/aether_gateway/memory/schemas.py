"""Wire models (pydantic) of `/api/memory/*`: strict requests whose bounds mirror
protos/aether/memory/v1/memory.proto, answers in the shapes of docs/ai.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import Field, StringConstraints, field_validator, model_validator

from aether_gateway.ai.schemas import Rfc3339
from aether_gateway.schemas import Request, Response

MAX_METADATA_BYTES = 16 * 1024
MAX_RECORDS = 256

Namespace = Literal["memories", "knowledge", "chat"]
RecordId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
RoomId = Annotated[str, StringConstraints(pattern=r"^[\w.:-]{1,128}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8_000)]
Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]


# -- requests ------------------------------------------------------------------------------------
class RecordIn(Request):
    id: RecordId | None = Field(default=None, description="generated when absent")
    text: Text
    metadata: dict[str, Any] | None = Field(
        default=None, description="any JSON object, at most 16 KiB"
    )

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is not None and len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes of JSON")
        return metadata


class UpsertIn(Request):
    namespace: Namespace
    records: Annotated[list[RecordIn], Field(min_length=1, max_length=MAX_RECORDS)]


class DeleteIn(Request):
    namespace: Namespace
    ids: Annotated[list[RecordId], Field(min_length=1, max_length=MAX_RECORDS)]


class SearchIn(Request):
    namespace: Namespace
    query: Query
    limit: Annotated[int, Field(ge=1, le=50)] = 5
    room_id: RoomId | None = Field(default=None, description='required for "chat"')
    created_after: Rfc3339 | None = None
    created_before: Rfc3339 | None = None
    min_score: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _filters(self) -> Self:
        if self.namespace == "chat" and self.room_id is None:
            raise ValueError('room_id is required to search the "chat" namespace')
        if (
            self.created_after is not None
            and self.created_before is not None
            and self.created_after >= self.created_before
        ):
            raise ValueError("created_after must be before created_before")
        return self


# -- responses -----------------------------------------------------------------------------------
class UpsertOut(Response):
    ids: list[str] = Field(description="in request order")
    embedded: int = Field(description="texts embedded (unchanged texts are not)")


class DeleteOut(Response):
    deleted: int


class HitOut(Response):
    id: str
    text: str
    score: float = Field(description="cosine similarity, -1..1")
    metadata: dict[str, Any]
    user_id: str
    room_id: str
    created_at: str | None


class SearchOut(Response):
    hits: list[HitOut] = Field(description="best first")
