"""Parent jobs: open (or resume) a store's sync, plan its chunks from Graph's count, close it."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg

from mailsync import validate
from mailsync.db import Database, Row
from mailsync.errors import InvalidInputError
from mailsync.graph import GraphClient

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

    @classmethod
    def checked(
        cls, *, business_id: str | UUID, mailbox: str, folder: str,
        sync_from: str | datetime | None, sync_to: str | datetime | None,
        chunk_size: int, page_size: int,
    ) -> SyncRequest:  # fmt: skip
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
        )

    @property
    def sync_type(self) -> str:
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


def open_job(db: Database, request: SyncRequest) -> tuple[Row, bool]:
    """The store's unfinished job (resumed) or a new one; True when it was resumed."""
    with db.transaction(request.business_id) as session:
        store = session.one(
            "upsert_store",
            business_id=request.business_id,
            name=f"{request.mailbox}/{request.folder}",
            mailbox=request.mailbox,
            folder=request.folder,
        )
        assert store is not None
        active = session.one("get_active_job_for_store", store_id=store["id"])
        if active:
            return active, True
    try:
        with db.transaction(request.business_id) as session:
            job = session.one(
                "create_sync_job",
                business_id=request.business_id,
                store_id=store["id"],
                sync_type=request.sync_type,
                sync_from=request.sync_from,
                sync_to=request.sync_to,
                chunk_size=request.chunk_size,
                page_size=request.page_size,
                metadata={},
            )
            assert job is not None
            return job, False
    except psycopg.errors.UniqueViolation:
        # Another process opened one between our look and our insert: resume that one.
        active = db.one("get_active_job_for_store", request.business_id, store_id=store["id"])
        if active is None:
            raise
        return active, True


def load_job(db: Database, job_id: UUID | str, business_id: UUID | None = None) -> Row:
    """The job, read as its tenant: ``business_id`` when the caller knows it, else the
    business ``job_business`` finds for the job id."""
    job_uuid = _job_uuid(job_id)
    tenant = business_id or job_business(db, job_uuid)
    job = db.one("get_sync_job", tenant, job_id=job_uuid) if tenant else None
    if job is None:
        raise InvalidInputError(f"no sync job {job_id}")
    return job


def job_business(db: Database, job_id: UUID | str) -> UUID | None:
    """Whose job is this? The one question asked across tenants, by the code paths that know
    only a job id (`mailsync resume JOB`, `status JOB`, ``sync_mailbox(job_id=...)`` and its
    tasks, the CLI's progress bar); everything after it works as that tenant. None for an
    unknown job."""
    row = db.one("job_business", job_id=_job_uuid(job_id))
    return row["business_id"] if row else None


def _job_uuid(job_id: UUID | str) -> UUID:
    return validate.job_id(job_id)


def load_store(db: Database, job: Row) -> Row:
    store = db.one("get_store", job["business_id"], store_id=job["store_id"])
    assert store is not None, "a job's store is deleted with it (foreign key)"
    return store


def start_job(db: Database, job: Row) -> Row:
    started = db.one("start_sync_job", job["business_id"], job_id=job["id"])
    if started is None:
        raise InvalidInputError(
            f"sync job {job['id']} is already {job['status']}; nothing to resume"
        )
    return started


def plan_job(db: Database, graph: GraphClient, job: Row, store: Row, max_attempts: int) -> Row:
    """Count the window in Graph and create the chunks; a planned job keeps its plan."""
    if job["total_chunks"] is not None:
        return job
    calls_before = graph.api_calls
    estimated = graph.count_messages(
        store["mailbox"], store["folder"], graph_time(job["sync_from"]), graph_time(job["sync_to"])
    )
    total_chunks = max(1, math.ceil(estimated / job["chunk_size"]))
    with db.transaction(job["business_id"]) as session:
        session.execute(
            "plan_sync_job",
            job_id=job["id"],
            estimated_emails=estimated,
            total_chunks=total_chunks,
            max_attempts=max_attempts,
            api_calls=graph.api_calls - calls_before,
        )
        planned = session.one("get_sync_job", job_id=job["id"])
    assert planned is not None
    return planned


def fail_job(db: Database, job: Row, message: str, category: str) -> None:
    db.one(
        "fail_sync_job", job["business_id"], job_id=job["id"],
        error_message=message, error_category=category,
    )  # fmt: skip


def finish_job(db: Database, job: Row) -> str:
    row = db.one("finish_sync_job", job["business_id"], job_id=job["id"])
    return str(row["status"]) if row else "unknown"


def job_summary(db: Database, job_id: UUID) -> dict[str, Any]:
    """The numbers a user checks after a sync, as one JSON-able dict."""
    job = load_job(db, job_id)
    with db.transaction(job["business_id"]) as session:
        progress = (session.one("get_sync_job_progress", job_id=job_id) or {}).get("progress") or {}
        stored = session.one("count_store_emails", store_id=job["store_id"])
        store = session.one("get_store", store_id=job["store_id"])
    elapsed = None
    if job["started_at"]:
        end = job["completed_at"] or datetime.now(UTC)
        elapsed = round((end - job["started_at"]).total_seconds(), 3)
    return {
        "job_id": str(job["id"]),
        "store_id": str(job["store_id"]),
        "business_id": str(job["business_id"]),
        "mailbox": store["mailbox"] if store else None,
        "folder": store["folder"] if store else None,
        "status": job["status"],
        "sync_type": job["sync_type"],
        "sync_from": job["sync_from"].isoformat() if job["sync_from"] else None,
        "sync_to": job["sync_to"].isoformat() if job["sync_to"] else None,
        "chunks_total": progress.get("total_chunks", 0),
        "chunks_completed": progress.get("completed_chunks", 0),
        "chunks_failed": progress.get("failed_chunks", 0),
        "chunks_pending": progress.get("pending_chunks", 0) + progress.get("retrying_chunks", 0),
        "chunks_processing": progress.get("processing_chunks", 0),
        "emails_in_mailbox": job["estimated_emails"],
        "emails_processed": progress.get("emails_processed", 0),
        "emails_failed": progress.get("emails_failed", 0),
        "emails_stored": stored["n"] if stored else 0,
        "api_calls": job["api_calls_made"]
        + (0 if job["status"] in TERMINAL_JOB_STATUSES else progress.get("api_calls_made", 0)),
        "error_category": job["error_category"],
        "error_message": job["error_message"],
        "elapsed_s": elapsed,
    }
