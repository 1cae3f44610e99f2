"""Typed rows: what the sync reads of a job, its chunks and its store, as frozen dataclasses.

The named queries answer ``dict`` rows (``psycopg.rows.dict_row``); the sync's core reads
them through these classes instead of by string keys, so a misspelt column is a type error
and the fields it depends on are written down once. ``of`` takes the declared columns and
ignores others: ``SELECT *`` queries keep working when a migration adds a column, and a
query that lacks a declared column fails at once (KeyError), not later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self
from uuid import UUID


class TypedRow:
    @classmethod
    def of(cls, row: dict[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class JobRow(TypedRow):
    """A row of ``sync_queue``: one sync of one store."""

    id: UUID
    business_id: UUID
    store_id: UUID
    sync_type: str  # full (a delta round from scratch), incremental, date_range
    status: str
    sync_from: datetime | None
    sync_to: datetime | None
    chunk_size: int
    page_size: int
    folder: str
    force_full: bool
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoreRow(TypedRow):
    """A row of ``stores``: one mailbox of one business (registered or not)."""

    id: UUID
    business_id: UUID
    mailbox: str
    folder: str  # "all", or the one folder an ad-hoc sync was asked for


@dataclass(frozen=True, slots=True)
class ChunkRow(TypedRow):
    """A row of ``chunked_sync_jobs``: one chunk of a job, as its claim left it."""

    id: UUID
    parent_sync_job_id: UUID
    business_id: UUID
    chunk_index: int
    total_chunks: int
    chunk_size: int
    kind: str  # delta (a stretch of a folder's delta round) or window (a keyset listing)
    folder_id: str | None  # None: planned before migration 0006
    last_in_folder: bool
    status: str
    attempts: int
    max_attempts: int
    worker_id: str | None
    checkpoint_data: dict[str, Any]
    emails_processed: int
    emails_failed: int
    api_calls_made: int
    processing_time_ms: int
    error_category: str | None
    error_message: str | None
