"""The JSON document of ExportMyData (the GDPR export; services/memory/README.md "GDPR export"):
every record memory keeps keyed by the caller, by namespace:

- `memories`: their own memories (only they read them);
- `knowledge`: the shared knowledge records they wrote (admins and `memory:admin` holders);
- `chat`: the searchable copies of the chat messages they sent (chat holds the messages; memory
  indexes them from chat's events).

Each record: id, room_id ("" outside chat), text, metadata, created_at, updated_at. Not the
vectors: they are an index computed from `text` by the embedding model (Qdrant's points), not
information about the user beyond the text itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from aether_common.data_export import ExportDocument
from aether_memory.namespaces import Namespace
from aether_memory.repository import ExportRow


class ExportedRecord(BaseModel):
    id: str
    room_id: str
    text: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class MemoryExport(ExportDocument):
    service: Literal["memory"] = "memory"
    vectors_included: Literal[False] = False
    memories: list[ExportedRecord]
    knowledge: list[ExportedRecord]
    chat: list[ExportedRecord]

    @classmethod
    def of(cls, user_id: str, rows: Sequence[ExportRow]) -> MemoryExport:
        sections: dict[str, list[ExportedRecord]] = {n.value: [] for n in Namespace}
        for row in rows:
            sections.setdefault(row.namespace, []).append(
                ExportedRecord(
                    id=row.id,
                    room_id=row.room_id,
                    text=row.text,
                    metadata=row.metadata,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
            )
        return cls(
            user_id=user_id,
            memories=sections[Namespace.MEMORIES],
            knowledge=sections[Namespace.KNOWLEDGE],
            chat=sections[Namespace.CHAT],
        )
