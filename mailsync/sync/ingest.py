"""Writing a page of messages: binary COPY into a staging table, then one upsert into emails.

Replays store nothing twice (unique (store_id, graph_id)); a message whose stored fields
changed is updated; an identical one costs no write (content_hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from mailsync.graph.messages import EMAIL_COLUMNS, EmailRecord
from mailsync.store.db import Session

# The staging table's column types (sql/queries.sql, create_email_staging), for the binary
# COPY: nothing to escape here, nothing to unescape in the server.
STAGING_TYPES = {
    "graph_id": "text",
    "internet_message_id": "text",
    "conversation_id": "text",
    "subject": "text",
    "sender_name": "text",
    "sender_address": "text",
    "from_address": "text",
    "to_recipients": "text",
    "cc_recipients": "text",
    "received_at": "timestamptz",
    "sent_at": "timestamptz",
    "body_content_type": "text",
    "body": "text",
    "body_preview": "text",
    "has_attachments": "bool",
    "is_read": "bool",
    "importance": "text",
    "parent_folder_id": "text",
    "categories": "text",
    "content_hash": "text",
}
_STAGING_COLUMN_TYPES = [STAGING_TYPES[c] for c in EMAIL_COLUMNS]


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    updated: int
    unchanged: int


def may_have_attachments(messages: list[EmailRecord]) -> list[str]:
    """The ids of the messages to list attachments of: hasAttachments, or an html body that
    references a ``cid:`` part (inline-only mail reports hasAttachments false), in any case.

    Chosen here rather than by ``ILIKE`` on the staged bodies: Postgres lowercased each html
    body whole, locale-aware, for that one test; it cost about as much server CPU as the
    upsert of the page (docs/benchmark.md, issue 23). Lowered as UTF-8 bytes, not as ``str``:
    ``str.lower`` of a body with any non-ASCII character maps each character through
    Unicode's tables (a tenth of the syncing process's CPU); ``bytes.lower`` maps A-Z only,
    which is all that "cid:" needs (no other character lowercases to c, i or d alone)."""
    return list(
        dict.fromkeys(
            m.graph_id
            for m in messages
            if m.has_attachments
            or (m.body_content_type == "html" and m.body and _names_a_cid(m.body))
        )
    )


def _names_a_cid(body: str) -> bool:
    return b"cid:" in body.encode("utf-8", "surrogatepass").lower()


def write_messages(
    session: Session,
    *,
    business_id: UUID,
    store_id: UUID,
    job_id: UUID,
    messages: list[EmailRecord],
) -> WriteResult:
    """COPY the page into the connection's staging table, then merge it into emails and mark
    its messages that may have attachments for listing, in the session's transaction."""
    if not messages:
        return WriteResult(0, 0, 0)
    session.execute("create_email_staging")
    session.copy_rows(
        "email_staging", EMAIL_COLUMNS, (m.row() for m in messages), _STAGING_COLUMN_TYPES
    )
    upserted = session.send(
        "upsert_staged_emails", business_id=business_id, store_id=store_id, job_id=job_id
    )
    # Messages that may have attachments, for fetch-attachments to list (delta pages carry
    # none: mailsync.sync.attachments), in the same round trip.
    if listed := may_have_attachments(messages):
        session.execute(
            "mark_attachment_listings",
            business_id=business_id,
            store_id=store_id,
            graph_ids=listed,
        )
    counts = upserted.one()
    assert counts is not None  # an aggregate always returns its row
    written, inserted = counts["written"], counts["inserted"]
    distinct = len({m.graph_id for m in messages})
    return WriteResult(inserted, written - inserted, distinct - written)
