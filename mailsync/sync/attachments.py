"""Fetching a store's pending attachments: list each marked message, then each file or item
attachment's bytes into ``attachment_blobs``, once per distinct content.

When. A page's messages commit as before, marked for listing (``mark_attachment_listings``,
mailsync.sync.ingest); this runs after the job's chunks (the ``fetch-attachments`` task), so
paging never waits for a 100 MB download, and a resumed job runs it again: whatever a killed
worker left pending is fetched then.

Two short transactions per attachment, none held while Graph answers, each pipelined (its
statements travel together: a round trip for the claim, two for a known content, six for
a new one). The first takes the row for this run (``run_id``, ``SKIP LOCKED``) and commits;
the bytes are fetched and hashed with no connection held; the second stores and records
them. Holding a connection across the download deadlocked the pool: each Graph request
takes its slot through a connection of the same pool (mailsync.graph.limits), so N fetch
threads holding N connections starved the requests they waited for (two sync-alls of 3
mailboxes on a pool of 4, 2026-12-07). A killed run's rows keep its id, so the next run
(a resumed job) takes them again: at most the attachments in flight are fetched twice.
Each run tries each pending row once: a transient failure waits for the next run instead
of looping here.

Failures are per attachment, never per mailbox (Corso #5419: two attachments Graph could not
serve blocked every backup of a mailbox). Permanent ones (404, a malformed id, 405, over the
size cap, a list item we cannot read) are recorded in ``fetch_error`` and never asked for
again; transient ones (429, 5xx, timeouts past the HTTP layer's retries) stay pending.

Memory. The bytes go to a temporary file while they are hashed, then, when the content is
new to the business, from the file into Postgres by binary COPY (mailsync.store.blobs): a
100 MB attachment is never whole in this process.

Concurrency. ``WORKERS`` threads; every request goes through the Graph transport's shared
per-mailbox limit (4 in flight, mailsync.graph.limits), so with paging finished this cannot
exceed Outlook's limit.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from threading import Event, Lock
from typing import IO, TypeVar
from uuid import UUID

from mailsync.errors import (
    BadDataError,
    BadRequestError,
    GraphError,
    NotFoundError,
)
from mailsync.graph.attachments import download, list_attachments
from mailsync.graph.client import GraphClient
from mailsync.store.blobs import copy_bytea
from mailsync.store.db import Database, Session
from mailsync.store.rows import AttachmentClaim, ListingClaim
from mailsync.sync import shutdown
from mailsync.threads import DaemonThreads

logger = logging.getLogger(__name__)

DEFAULT_MAX_MB = 150.0  # Graph's largest attachment
WORKERS = 3  # + paging's 1 would be Outlook's 4 per mailbox; the limits enforce it anyway
PERMANENT_STATUSES = {400, 404, 405, 410}


class TooLargeError(Exception):
    """The content passed the size cap: stopped reading, a permanent failure."""


@dataclass
class AttachmentCounts:
    """What one run did (the job's own numbers come from the rows: job_attachment_stats)."""

    listed: int = 0
    stored: int = 0
    deduplicated: int = 0
    unavailable: int = 0
    failed: int = 0
    bytes: int = 0
    api_calls: int = 0
    _lock: Lock = field(default_factory=Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {
            "attachments_listed": self.listed,
            "attachments_stored": self.stored,
            "attachments_deduplicated": self.deduplicated,
            "attachments_unavailable": self.unavailable,
            "attachments_failed": self.failed,
            "attachment_bytes": self.bytes,
            "attachment_api_calls": self.api_calls,
        }


@dataclass(frozen=True)
class Target:
    """Whose attachments: the store, its mailbox, the job, this run."""

    business_id: UUID
    store_id: UUID
    mailbox: str
    job_id: UUID
    run_id: UUID = field(default_factory=uuid.uuid4)


def is_permanent(exc: GraphError) -> bool:
    """Graph will never serve this one: gone, malformed, not content (405)."""
    return (
        isinstance(exc, NotFoundError | BadRequestError)
        or exc.status in PERMANENT_STATUSES
        or exc.code in ("ErrorItemNotFound", "ErrorInvalidIdMalformed")
    )


def fetch_attachments(
    db: Database,
    graph: GraphClient,
    target: Target,
    *,
    mode: str = "content",
    max_bytes: int = int(DEFAULT_MAX_MB * 1024 * 1024),
    workers: int = WORKERS,
) -> AttachmentCounts:
    """List the store's marked messages, then (``mode`` content) fetch its pending file and
    item attachments; each pending row is tried once by this run."""
    counts = AttachmentCounts()
    if mode == "none":
        return counts
    _drain(workers, lambda: _list_one(db, graph, target, counts))
    if mode == "content":
        _drain(workers, lambda: _fetch_one(db, graph, target, counts, max_bytes))
    return counts


def _drain(workers: int, step: Callable[[], bool]) -> None:
    """Run ``step`` in ``workers`` threads until each one says there is nothing left.

    A stop ends it after each thread's current step, without waiting for those steps: a
    stop asked of the process (``shutdown``: its wait wakes at once), or one raised in this
    thread (Prefect's ``TerminationSignal`` in a worker's flow run), or an error. A step
    left behind is an attachment claimed by this run: the next run takes it again."""
    ended = Event()

    def loop() -> None:
        while not ended.is_set() and not shutdown.STOP.is_set() and step():
            pass

    threads = DaemonThreads(workers, "attachments")
    try:
        for future in [threads.submit(loop) for _ in range(workers)]:
            shutdown.result(future)  # a database error ends the run: the job stays resumable
    finally:
        ended.set()
        threads.close(wait_s=0)  # each thread ends after its current step


# What a step's Graph work leaves to record: a statement or two in the recording transaction,
# and the counts they amount to.
Record = Callable[[Session], dict[str, int]]
C = TypeVar("C", ListingClaim, AttachmentClaim)


def _one(
    db: Database,
    graph: GraphClient,
    target: Target,
    counts: AttachmentCounts,
    claim: tuple[type[C], str],
    work: Callable[[GraphClient, C], AbstractContextManager[Record]],
) -> bool:
    """One row of a step, the shape both steps share: claim it for this run (a transaction
    of its own), ask Graph with no connection held (``work``), then record what came back
    and count the Graph requests in the job's (one more transaction). False when no row is
    left for this run.

    ``work`` is a context: what it fetched may live in a temporary file until recorded."""
    client = graph.fork()  # counts this row's requests only
    row_class, query = claim
    row = _claim(db, target, row_class, query)
    if row is None:
        return False
    with work(client, row) as record, db.pipelined(target.business_id) as session:
        tally = record(session)
        # Last: the job's row stays locked only until this commit (three threads record).
        session.execute("add_job_api_calls", job_id=target.job_id, api_calls=client.api_calls)
    counts.add(api_calls=client.api_calls, **tally)
    return True


def _list_one(db: Database, graph: GraphClient, target: Target, counts: AttachmentCounts) -> bool:
    """List one claimed message's attachments; False when none is left for this run."""
    return _one(
        db,
        graph,
        target,
        counts,
        (ListingClaim, "claim_attachment_listing"),
        partial(_listing, target),
    )


@contextmanager
def _listing(target: Target, client: GraphClient, claim: ListingClaim) -> Iterator[Record]:
    message_id = claim.email_graph_id
    error: str | None = None
    done = True
    try:
        listed = list_attachments(client, target.mailbox, message_id)
    except (GraphError, BadDataError) as exc:
        listed = []
        done = isinstance(exc, BadDataError) or is_permanent(exc)
        error = str(exc)[:500] if done else None
        if not done:
            logger.warning("listing attachments of %s failed for now: %s", message_id[:20], exc)

    def record(session: Session) -> dict[str, int]:
        if listed:
            session.execute(
                "upsert_listed_attachments",
                business_id=target.business_id,
                store_id=target.store_id,
                email_graph_id=message_id,
                job_id=target.job_id,
                attachments=[a.as_json() for a in listed],
            )
        session.execute(
            "finish_attachment_listing",
            store_id=target.store_id,
            email_graph_id=message_id,
            done=done,
            list_error=error,
            job_id=target.job_id,
            run_id=target.run_id,
        )
        return {
            "listed": 1 if done and error is None else 0,
            "unavailable": 1 if error else 0,
            "failed": 0 if done else 1,
        }

    yield record


def _fetch_one(
    db: Database, graph: GraphClient, target: Target, counts: AttachmentCounts, max_bytes: int
) -> bool:
    """Fetch one claimed attachment's content; False when none is left for this run."""
    return _one(
        db,
        graph,
        target,
        counts,
        (AttachmentClaim, "claim_pending_attachment"),
        partial(_fetching, target, max_bytes),
    )


@contextmanager
def _fetching(
    target: Target, max_bytes: int, client: GraphClient, claim: AttachmentClaim
) -> Iterator[Record]:
    """The content into a temporary file (hashed on the way), kept until it is recorded."""
    ids = {"id": claim.id, "job_id": target.job_id, "run_id": target.run_id}
    with tempfile.TemporaryFile(prefix="mailsync-attachment-") as spool:
        try:
            fetched: tuple[str, int] | GraphError | TooLargeError = download(
                client,
                target.mailbox,
                claim.email_graph_id,
                claim.graph_attachment_id,
                lambda chunks: spool_content(chunks, spool, max_bytes),
            )
        except (GraphError, TooLargeError) as exc:  # TransientError too: the network
            fetched = exc
        if isinstance(fetched, tuple):
            yield partial(_record_content, target.business_id, ids, spool, *fetched)
        else:
            yield partial(_record_failure, ids, fetched)


def _record_content(
    business_id: UUID,
    ids: dict[str, object],
    spool: IO[bytes],
    sha256: str,
    size: int,
    session: Session,
) -> dict[str, int]:
    deduplicated = _store_blob(session, business_id, sha256, size, spool)
    session.execute(
        "record_attachment_content",
        sha256=sha256,
        size_bytes=size,
        deduplicated=deduplicated,
        **ids,
    )
    return {"stored": int(not deduplicated), "deduplicated": int(deduplicated), "bytes": size}


def _record_failure(
    ids: dict[str, object], exc: GraphError | TooLargeError, session: Session
) -> dict[str, int]:
    permanent = isinstance(exc, TooLargeError) or is_permanent(exc)
    message = str(exc)[:500]
    session.execute(
        "record_attachment_failure",
        fetch_error=message if permanent else None,
        transient_error=None if permanent else message,
        **ids,
    )
    return {"unavailable": int(permanent), "failed": int(not permanent)}


def _claim(db: Database, target: Target, row_class: type[C], query: str) -> C | None:
    """Take one row for this run (``query``: a claim of sql/attachments.sql), or None.

    One round trip (the claim's row comes back with the commit), and the commit does not
    wait for the WAL flush: a claim lost in a crash of the server only leaves its row
    pending, and the run that made it has lost its connections anyway. What the row's
    content is stored with commits durably, and flushes the claim before it."""
    with db.pipelined(target.business_id) as session:
        session.execute("commit_lazily")
        pending = session.send_as(row_class, query, store_id=target.store_id, run_id=target.run_id)
    return pending.one()


def spool_content(chunks: Iterator[bytes], spool: IO[bytes], max_bytes: int) -> tuple[str, int]:
    """Write the body to ``spool`` (from its start: a retry rewrites it), hashing it; its
    SHA-256 (lower-case hex) and length."""
    spool.seek(0)
    spool.truncate()
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLargeError(
                f"larger than the cap of {max_bytes} bytes (MAILSYNC_ATTACHMENT_MAX_MB)"
            )
        digest.update(chunk)
        spool.write(chunk)
    return digest.hexdigest(), size


def _store_blob(
    session: Session, business_id: UUID, sha256: str, size: int, spool: IO[bytes]
) -> bool:
    """The content into attachment_blobs unless the business has it; True when it had."""
    if session.one("touch_attachment_blob", business_id=business_id, sha256=sha256) is not None:
        return True
    session.execute("create_blob_upload")
    spool.seek(0)
    copy_bytea(session, "blob_upload", "content", spool, size)
    row = session.one(
        "insert_uploaded_blob", business_id=business_id, sha256=sha256, size_bytes=size
    )
    assert row is not None  # INSERT ... RETURNING always answers here
    return not row["inserted"]
