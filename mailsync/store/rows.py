"""Typed rows: what the code reads of a job, its chunks, its store and its folders, as frozen
dataclasses.

The named queries answer ``dict`` rows (``psycopg.rows.dict_row``) unless asked for a class:
``Session.one_as(JobRow, "get_sync_job", ...)`` reads each row straight into the class
(``typed_row``, psycopg's ``class_row`` that takes only the class's fields), so a misspelt
column is a type error and the fields the code depends on are written down once. Both
ways take the declared columns and ignore others: ``SELECT *`` queries keep working when a
migration adds a column, and a query that lacks a declared column fails at once, naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import BaseRowFactory, RowMaker, no_result

if TYPE_CHECKING:
    from psycopg.cursor import BaseCursor


class TypedRow:
    if TYPE_CHECKING:  # each subclass is a dataclass: its own __init__, one field per column

        def __init__(self, *values: Any, **columns: Any) -> None: ...

    @classmethod
    def of(cls, row: dict[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


R = TypeVar("R", bound=TypedRow)


class MissingColumnsError(psycopg.ProgrammingError):
    """A query does not answer every column its row class declares: a programming error.

    A psycopg error on purpose: raised while psycopg reads a pipeline's results, any other
    exception left the rest of them unread and the connection unusable ("cannot exit
    pipeline mode while busy", depending on when they came); psycopg reads on past its own
    errors and raises the first one once the pipeline is done."""


def typed_row(cls: type[R]) -> BaseRowFactory[R]:
    """A psycopg row factory that makes ``cls`` of each row, from the columns named like its
    fields (found once per result, not per row); other columns are left out."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]

    def maker(cursor: BaseCursor[Any, Any]) -> RowMaker[R]:
        if cursor.description is None:  # a statement with no result
            return no_result
        columns = [column.name for column in cursor.description]
        missing = [name for name in names if name not in columns]
        if missing:
            raise MissingColumnsError(f"{cls.__name__}: the query has no column {missing}")
        at = [columns.index(name) for name in names]

        def make(values: Sequence[Any]) -> R:
            return cls(*[values[i] for i in at])

        return make

    return maker


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
    # The plan (None until planned) and the totals a closed job keeps.
    total_chunks: int | None
    estimated_emails: int | None
    folders: int | None
    folders_unchanged: int  # folders whose round came back empty at planning: no chunk
    api_calls_made: int  # planning's and attachments' requests; the chunks' once closed
    emails_added: int
    emails_updated: int
    emails_deleted: int
    delta_resets: int
    delta_fallbacks: int
    error_category: str | None
    error_message: str | None

    @property
    def windowed(self) -> bool:
        """A sync window (--from/--to): keyset listings, no delta state."""
        return self.sync_from is not None or self.sync_to is not None


@dataclass(frozen=True, slots=True)
class StoreRow(TypedRow):
    """A row of ``stores``: one mailbox of one business (registered or not)."""

    id: UUID
    business_id: UUID
    mailbox: str
    folder: str  # "all", or the one folder an ad-hoc sync was asked for
    folders_delta_link: str | None  # where the next mailFolders/delta round starts
    registered_at: datetime | None  # None: not in the registry (an ad-hoc sync's store)


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


@dataclass(frozen=True, slots=True)
class FolderRow(TypedRow):
    """A row of ``mail_folders``: one folder of a store, as last listed, with its delta state."""

    graph_id: str
    parent_graph_id: str | None
    display_name: str
    path: str  # display names from the top: "Inbox/Projects/2024"
    well_known_name: str | None
    is_hidden: bool
    total_item_count: int | None  # Graph's count in the tree (None: not given)
    delta_link: str | None  # where the folder's next round starts (None: from scratch)


@dataclass(frozen=True, slots=True)
class FolderStatsRow(TypedRow):
    """``job_folder_stats``: what a job did in one folder (sums are None with no chunk)."""

    folder_id: str | None
    path: str | None
    sync_type: str  # full or incremental
    failed_chunks: int
    emails_added: int | None
    emails_updated: int | None
    emails_deleted: int
    delta_resets: int | None
    fallback: bool | None
    api_calls: int | None


@dataclass(frozen=True, slots=True)
class AttachmentStatsRow(TypedRow):
    """``job_attachment_stats``: a job's attachments in one folder (None: the message is gone)."""

    folder_id: str | None
    stored: int
    deduplicated: int
    unavailable: int
    failed: int
    bytes: int | Decimal  # sum(bigint) is numeric


@dataclass(frozen=True, slots=True)
class RegistryEntry(TypedRow):
    """A store in the registry, as registering, removing, pausing or resuming it answers."""

    mailbox: str
    folder: str
    health: str  # registry_health(): ok, new, failing, backing_off, paused
    enabled: bool
    interval_minutes: int
    next_due_at: datetime | None
    last_status: str | None
    last_success_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    missed_changes: int  # polls that found changes no notification announced
    last_job_id: UUID | None
    registered_at: datetime | None  # None: removed from the registry
    id: UUID  # the store's


@dataclass(frozen=True, slots=True)
class RegisteredMailbox(RegistryEntry):
    """``list_registered_mailboxes``: an entry with its active job and its subscription."""

    subscription_expires_at: datetime | None  # change notifications; None: polled only
    active_job_id: UUID | None


@dataclass(frozen=True, slots=True)
class MailboxClaim(TypedRow):
    """``claim_due_mailboxes``: a mailbox sync-all took for this turn (next_due_at moved on)."""

    store_id: UUID
    business_id: UUID
    mailbox: str
    folder: str
    due_at: datetime  # names the turn: one flow run per mailbox and turn


@dataclass(frozen=True, slots=True)
class ChangedMailbox(TypedRow):
    """``changed_mailboxes``: a registered mailbox with a change notification no job has
    started after (sync-changed); ``ready``: its burst's first notification is old enough."""

    store_id: UUID
    business_id: UUID
    mailbox: str
    folder: str
    first_at: datetime
    ready: bool


@dataclass(frozen=True, slots=True)
class MailboxState(TypedRow):
    """``registered_mailbox_states``: a registered mailbox as sync-all's table shows it."""

    store_id: UUID
    last_success_at: datetime | None
    health: str


@dataclass(frozen=True, slots=True)
class ListingClaim(TypedRow):
    """``claim_attachment_listing``: a message whose attachments this run lists."""

    email_graph_id: str


@dataclass(frozen=True, slots=True)
class AttachmentClaim(TypedRow):
    """``claim_pending_attachment``: a file or item attachment whose bytes this run fetches."""

    id: int
    email_graph_id: str
    graph_attachment_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class StoredAttachment(TypedRow):
    """``get_attachment_content``: one attachment, and whether its content is stored."""

    graph_attachment_id: str
    kind: str  # file, item, reference (a link: never any content)
    name: str | None
    size_bytes: int | None  # the content's real length, once fetched
    sha256: str | None  # the content's, once fetched
    stored: bool


@dataclass(frozen=True, slots=True)
class StuckChunk(TypedRow):
    """``cleanup_stuck_chunks``: a chunk whose heartbeat stopped, and what became of it."""

    parent_sync_job_id: UUID
    new_status: str  # pending (put back) or failed (out of attempts)


@dataclass(frozen=True, slots=True)
class ClosedJob(TypedRow):
    """``close_finished_jobs``: an open job whose chunks had all finished, now closed."""

    job_id: UUID
    status: str  # completed, partial_failure or failed


@dataclass(frozen=True, slots=True)
class IdleJob(TypedRow):
    """``jobs_to_resume``: an open job nobody works on."""

    job_id: UUID
    open_chunks: int
