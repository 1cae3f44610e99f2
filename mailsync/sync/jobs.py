"""Parent jobs: open (or resume) a store's sync, plan its chunks from Graph's count, close it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict
from uuid import UUID

from mailsync import validate
from mailsync.config import Settings
from mailsync.errors import ConflictError, InvalidInputError, MailboxBusyError
from mailsync.store.db import Database
from mailsync.store.rows import AttachmentStatsRow, FolderStatsRow, JobRow, StoreRow

TERMINAL_JOB_STATUSES = {"completed", "partial_failure", "failed"}


@dataclass(frozen=True)
class SyncRequest:
    business_id: UUID
    mailbox: str
    folder: str
    sync_from: datetime | None
    sync_to: datetime | None
    chunk_size: int
    page_size: int
    full: bool = False  # list every folder in full, even those with a deltaLink

    @classmethod
    def checked(
        cls,
        *,
        business_id: str | UUID,
        mailbox: str,
        folder: str,
        sync_from: str | datetime | None,
        sync_to: str | datetime | None,
        chunk_size: int,
        page_size: int,
        full: bool = False,
    ) -> SyncRequest:
        """Every argument validated, with a message that says what is wrong."""
        start, end = validate.date_range(sync_from, sync_to)
        return cls(
            business_id=validate.business_id(business_id),
            mailbox=validate.mailbox(mailbox),
            folder=validate.folder(folder),
            sync_from=start,
            sync_to=end,
            chunk_size=validate.positive(chunk_size, "chunk size"),
            page_size=validate.positive(page_size, "page size", 1000),
            full=full,
        )

    @property
    def sync_type(self) -> str:
        """As far as known before planning (the plan says full or incremental)."""
        return "date_range" if self.sync_from or self.sync_to else "full"


def default_business_id(tenant_id: str | None) -> str:
    """The business defaults to the Microsoft 365 tenant: its GUID, or a UUID derived from it."""
    if tenant_id:
        try:
            return str(uuid.UUID(tenant_id))
        except ValueError:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailsync:tenant:{tenant_id}"))
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailsync:default-business"))


def graph_time(value: datetime | None) -> str | None:
    """A datetime as Graph's $filter literal: UTC, second precision, 'Z'."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_job(
    db: Database, request: SyncRequest, *, resume_active: bool = True
) -> tuple[JobRow, bool]:
    """The store's unfinished job (resumed) or a new one; True when it was resumed. Without
    ``resume_active``, an active job is MailboxBusyError instead: the unique index on the
    store's active job makes that check race-free (a notification's sync, issue 24)."""
    with db.pipelined(request.business_id) as session:
        store = session.one_as(
            StoreRow,
            "upsert_store",
            business_id=request.business_id,
            mailbox=request.mailbox,
            folder=request.folder,
        )
        assert store is not None
        active = session.one_as(JobRow, "get_active_job_for_store", store_id=store.id)
        if active and not resume_active:
            raise MailboxBusyError(f"mailbox {request.mailbox} has a sync running")
        if active:
            return active, True
    try:
        with db.pipelined(request.business_id) as session:
            job = session.one_as(
                JobRow,
                "create_sync_job",
                business_id=request.business_id,
                store_id=store.id,
                sync_type=request.sync_type,
                sync_from=request.sync_from,
                sync_to=request.sync_to,
                chunk_size=request.chunk_size,
                page_size=request.page_size,
                folder=request.folder,
                force_full=request.full,
                metadata={},
            )
            assert job is not None
            return job, False
    except ConflictError:
        # Another process opened one between our look and our insert: resume that one.
        active = db.one_as(
            JobRow, "get_active_job_for_store", request.business_id, store_id=store.id
        )
        if active is None:
            raise
        if not resume_active:
            raise MailboxBusyError(f"mailbox {request.mailbox} has a sync running") from None
        return active, True


def begin_job(
    db: Database,
    settings: Settings,
    *,
    mailbox: str | None,
    folder: str,
    business_id: str | None,
    sync_from: str | None,
    sync_to: str | None,
    chunk_size: int | None,
    page_size: int | None,
    job_id: str | None,
    full: bool = False,
    if_idle: bool = False,
) -> tuple[JobRow, bool]:
    """The running job of a sync: the store's new job, its unfinished one (resumed), or
    ``job_id``: resumed when it ran before, started when it did not (the CLI opens a job,
    then runs the flow on it). True when it was resumed. Every argument is checked first."""
    if job_id is None:
        if not mailbox:
            raise InvalidInputError("sync-mailbox needs a mailbox or the job_id of a job to resume")
        request = SyncRequest.checked(
            business_id=business_id or default_business_id(settings.tenant_id),
            mailbox=mailbox,
            folder=folder,
            sync_from=sync_from,
            sync_to=sync_to,
            chunk_size=chunk_size or settings.chunk_size,
            page_size=page_size or settings.page_size,
            full=full,
        )
        job, resumed = open_job(db, request, resume_active=not if_idle)
    else:
        job = load_job(db, job_id)
        resumed = job.started_at is not None
    return start_job(db, job), resumed


def load_job(db: Database, job_id: UUID | str, business_id: UUID | None = None) -> JobRow:
    """The job, read as its tenant: ``business_id`` when the caller knows it, else the
    business ``job_business`` finds for the job id."""
    job_uuid = _job_uuid(job_id)
    tenant = business_id or job_business(db, job_uuid)
    job = db.one_as(JobRow, "get_sync_job", tenant, job_id=job_uuid) if tenant else None
    if job is None:
        raise InvalidInputError(f"no sync job {job_id}")
    return job


def job_business(db: Database, job_id: UUID | str) -> UUID | None:
    """Whose job is this? The one question asked across tenants, by the code paths that know
    only a job id (`mailsync resume JOB`, `status JOB`, ``sync_mailbox(job_id=...)`` and its
    tasks, the CLI's progress bar); everything after it works as that tenant. None for an
    unknown job."""
    row = db.one("job_business", job_id=_job_uuid(job_id))
    return row["business_id"] if row else None  # one column: no class of its own


def _job_uuid(job_id: UUID | str) -> UUID:
    return validate.job_id(job_id)


def load_store(db: Database, job: JobRow) -> StoreRow:
    store = db.one_as(StoreRow, "get_store", job.business_id, store_id=job.store_id)
    assert store is not None, "a job's store is deleted with it (foreign key)"
    return store


def start_job(db: Database, job: JobRow) -> JobRow:
    started = db.one_as(JobRow, "start_sync_job", job.business_id, job_id=job.id)
    if started is None:
        raise InvalidInputError(f"sync job {job.id} is already {job.status}; nothing to resume")
    return started


def fail_job(db: Database, job: JobRow, message: str, category: str) -> None:
    db.one(
        "fail_sync_job",
        job.business_id,
        job_id=job.id,
        error_message=message,
        error_category=category,
    )


def finish_job(db: Database, job: JobRow) -> JobSummary:
    """Close the job once its chunks have finished; its summary either way."""
    db.one("finish_sync_job", job.business_id, job_id=job.id)
    summary = job_summary(db, job.id, job.business_id)
    if summary["status"] == "completed" and summary["attachments_failed"]:
        # Every page is in, but some attachments could not be fetched for now: the job says
        # so (the next sync fetches them), though none of its chunks failed.
        reason = f"{summary['attachments_failed']} attachments not fetched yet (transient)"
        db.one(
            "mark_job_attachments_failed",
            job.business_id,
            job_id=job.id,
            error_message=reason,
        )
        summary = job_summary(db, job.id, job.business_id)
    return summary


class AttachmentTotals(TypedDict):
    """What a job did with attachments (in all, or in one folder)."""

    attachments_stored: int
    attachments_deduplicated: int
    attachments_unavailable: int
    attachments_failed: int  # transient: the next sync tries them again
    attachment_bytes: int


class FolderSummary(AttachmentTotals):
    """What a job did in one folder (``job_folder_stats``, and its attachments)."""

    folder: str | None  # its path (its Graph id when the folder is not recorded)
    sync_type: str
    emails_added: int
    emails_updated: int
    emails_deleted: int
    delta_resets: int
    fallback: bool
    failed_chunks: int
    api_calls: int


class JobSummary(AttachmentTotals):
    """The numbers a user checks after a sync: JSON-able, what the sync-mailbox flow
    returns and ``mailsync sync --json`` prints (a TypedDict, not a class: it is a JSON
    document, read by key in tests and by users, and its keys are checked by mypy)."""

    job_id: str
    store_id: str
    business_id: str
    mailbox: str | None
    folder: str
    status: str
    sync_type: str
    sync_from: str | None
    sync_to: str | None
    chunks_total: int
    chunks_completed: int
    chunks_failed: int
    chunks_pending: int
    chunks_processing: int
    emails_in_mailbox: int | None
    emails_processed: int
    emails_failed: int
    emails_stored: int
    api_calls: int
    emails_added: int
    emails_updated: int
    emails_deleted: int
    delta_resets: int
    delta_fallbacks: int
    folders: list[FolderSummary]
    folders_unchanged: int  # folders whose round came back empty at planning: no chunk
    error_category: str | None
    error_message: str | None
    elapsed_s: float | None
    database_url: NotRequired[str]  # the CLI's: where to query the result (no password)


def job_summary(db: Database, job_id: UUID, business_id: UUID | None = None) -> JobSummary:
    """The numbers a user checks after a sync, as one JSON-able dict (``business_id``: the
    job's, when the caller knows it, which saves asking)."""
    job = load_job(db, job_id, business_id)
    # Pipelined: the five reads travel in one round trip (every sync ends here).
    with db.pipelined(job.business_id) as session:
        progress_sent = session.send("get_sync_job_progress", job_id=job_id)
        stored_sent = session.send("count_store_emails", store_id=job.store_id)
        store_sent = session.send_as(StoreRow, "get_store", store_id=job.store_id)
        folders_sent = session.send_as(FolderStatsRow, "job_folder_stats", job_id=job_id)
        attachments_sent = session.send_as(
            AttachmentStatsRow, "job_attachment_stats", job_id=job_id
        )
    progress = (progress_sent.one() or {}).get("progress") or {}
    stored, store, folders = stored_sent.one(), store_sent.one(), folders_sent.all()
    attachments, by_folder = attachment_totals(attachments_sent.all())
    elapsed = None
    if job.started_at:
        end = job.completed_at or datetime.now(UTC)
        elapsed = round((end - job.started_at).total_seconds(), 3)
    return {
        "job_id": str(job.id),
        "store_id": str(job.store_id),
        "business_id": str(job.business_id),
        "mailbox": store.mailbox if store else None,
        "folder": job.folder,
        "status": job.status,
        "sync_type": job.sync_type,
        "sync_from": job.sync_from.isoformat() if job.sync_from else None,
        "sync_to": job.sync_to.isoformat() if job.sync_to else None,
        "chunks_total": progress.get("total_chunks", 0),
        "chunks_completed": progress.get("completed_chunks", 0),
        "chunks_failed": progress.get("failed_chunks", 0),
        "chunks_pending": progress.get("pending_chunks", 0) + progress.get("retrying_chunks", 0),
        "chunks_processing": progress.get("processing_chunks", 0),
        "emails_in_mailbox": job.estimated_emails,
        "emails_processed": progress.get("emails_processed", 0),
        "emails_failed": progress.get("emails_failed", 0),
        "emails_stored": stored["n"] if stored else 0,
        "api_calls": job.api_calls_made
        + (0 if job.status in TERMINAL_JOB_STATUSES else progress.get("api_calls_made", 0)),
        "emails_added": _job_total(job, job.emails_added, (f.emails_added for f in folders)),
        "emails_updated": _job_total(job, job.emails_updated, (f.emails_updated for f in folders)),
        "emails_deleted": job.emails_deleted,
        "delta_resets": _job_total(job, job.delta_resets, (f.delta_resets for f in folders)),
        "delta_fallbacks": job.delta_fallbacks,
        **attachments,
        "folders": [
            _folder_summary(folder, by_folder.get(folder.folder_id, no_attachments()))
            for folder in folders
        ],
        # Folders whose round came back empty at planning: no chunk, so not in "folders".
        "folders_unchanged": job.folders_unchanged,
        "error_category": job.error_category,
        "error_message": job.error_message,
        "elapsed_s": elapsed,
    }


class SkippedSync(TypedDict):
    """What the sync-mailbox flow returns with ``if_idle`` when the mailbox has a sync
    running already."""

    status: Literal["skipped"]
    mailbox: str | None
    reason: str


def no_attachments() -> AttachmentTotals:
    return {
        "attachments_stored": 0,
        "attachments_deduplicated": 0,
        "attachments_unavailable": 0,
        "attachments_failed": 0,
        "attachment_bytes": 0,
    }


def attachment_totals(
    rows: list[AttachmentStatsRow],
) -> tuple[AttachmentTotals, dict[str | None, AttachmentTotals]]:
    """job_attachment_stats' rows: the job's totals, and by folder id (None: the message
    has gone since)."""
    total = no_attachments()
    by_folder: dict[str | None, AttachmentTotals] = {}
    for row in rows:
        for counts in (total, by_folder.setdefault(row.folder_id, no_attachments())):
            counts["attachments_stored"] += row.stored
            counts["attachments_deduplicated"] += row.deduplicated
            counts["attachments_unavailable"] += row.unavailable
            counts["attachments_failed"] += row.failed
            counts["attachment_bytes"] += int(row.bytes)
    return total, by_folder


def _job_total(job: JobRow, kept: int, by_folder: Iterable[int | None]) -> int:
    """The job's total: closed jobs keep it; a running one sums its chunks so far."""
    if job.status in TERMINAL_JOB_STATUSES:
        return kept
    return sum(int(n or 0) for n in by_folder)


def _folder_summary(folder: FolderStatsRow, attachments: AttachmentTotals) -> FolderSummary:
    return {
        "folder": folder.path,
        "sync_type": folder.sync_type,
        "emails_added": int(folder.emails_added or 0),
        "emails_updated": int(folder.emails_updated or 0),
        "emails_deleted": int(folder.emails_deleted or 0),
        "delta_resets": int(folder.delta_resets or 0),
        "fallback": bool(folder.fallback),
        "failed_chunks": int(folder.failed_chunks or 0),
        "api_calls": int(folder.api_calls or 0),
        **attachments,
    }


def incomplete_message(summary: JobSummary) -> str:
    """One line on a job that did not complete: what failed, and the first reason."""
    if summary["status"] not in TERMINAL_JOB_STATUSES:
        return (
            f"sync job {summary['job_id']} stopped with {summary['chunks_pending']} chunks "
            f"not finished; it resumes from its last committed page (mailsync resume "
            f"{summary['job_id']}, or the next cleanup)"
        )
    if summary["status"] == "partial_failure" and not summary["chunks_failed"]:
        return (
            f"sync job {summary['job_id']} ended partial_failure: every message stored, "
            f"{summary['attachments_failed']} attachments not fetched for now "
            f"({summary['error_message'] or 'transient'}); the next sync fetches them"
        )
    return (
        f"sync job {summary['job_id']} ended {summary['status']}: "
        f"{summary['chunks_failed']} of {summary['chunks_total']} chunks failed "
        f"({summary['error_category'] or 'unknown'}: {summary['error_message'] or 'no message'}); "
        f"{summary['emails_stored']} messages stored"
    )
