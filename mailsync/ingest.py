"""Writing a page of messages: COPY into a staging table, then one upsert into emails.

Replays store nothing twice (unique (store_id, graph_id)); a message whose stored fields
changed is updated; an identical one costs no write (content_hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from mailsync.db import Session
from mailsync.graph import EmailRecord


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    updated: int
    unchanged: int


def write_messages(
    session: Session, *, business_id: UUID, store_id: UUID, job_id: UUID,
    messages: list[EmailRecord],
) -> WriteResult:  # fmt: skip
    if not messages:
        return WriteResult(0, 0, 0)
    session.execute("create_email_staging")
    session.copy_rows("email_staging", EmailRecord.COLUMNS, (m.row() for m in messages))
    writes = session.all(
        "upsert_staged_emails", business_id=business_id, store_id=store_id, job_id=job_id
    )
    inserted = sum(1 for w in writes if w["inserted"])
    session.execute_many(
        "upsert_attachment",
        [
            {
                "business_id": business_id,
                "store_id": store_id,
                "email_graph_id": m.graph_id,
                "graph_attachment_id": a.graph_attachment_id,
                "name": a.name,
                "content_type": a.content_type,
                "size_bytes": a.size_bytes,
                "is_inline": a.is_inline,
            }
            for m in messages
            for a in m.attachments
        ],
    )
    distinct = len({m.graph_id for m in messages})
    return WriteResult(inserted, len(writes) - inserted, distinct - len(writes))
