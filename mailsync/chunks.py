"""One attempt at one chunk: claim, fetch pages from the job's cursor, write, complete.

Each page is one transaction: the fence (do we still hold the chunk?), the page's rows,
the job's new checkpoint and, on the chunk's last page, its completion. A crash anywhere
leaves a page wholly written or not at all, and the next attempt (or chunk) continues
from the newest checkpoint. The next page is fetched while the current one is written.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mailsync.db import Database, Row
from mailsync.errors import (
    LeaseLostError,
    MailsyncError,
    category_of,
    is_retryable,
)
from mailsync.graph import Cursor, GraphClient, Page, backoff_delay
from mailsync.ingest import write_messages
from mailsync.jobs import graph_time


@dataclass(frozen=True)
class ChunkOutcome:
    chunk_index: int
    status: str  # completed | retrying | failed
    attempt: int
    emails_processed: int
    emails_failed: int
    api_calls: int
    processing_time_ms: int
    error_category: str | None = None
    error_message: str | None = None


class ChunkBusyError(MailsyncError):
    """The chunk is held by another live worker, or not claimable yet."""

    category = "busy"
    retryable = True


class Heartbeat:
    """Renews the chunk's lease from its own connection while the attempt works."""

    def __init__(self, db: Database, chunk: Row, worker_id: str, interval_s: float) -> None:
        self._db, self._chunk, self._worker_id = db, chunk, worker_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chunk-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                row = self._db.one(
                    "heartbeat_chunk", self._chunk["business_id"], chunk_id=self._chunk["id"],
                    worker_id=self._worker_id, attempt=self._chunk["attempts"],
                )  # fmt: skip
            except MailsyncError:
                continue  # the database blinked; the page fence decides, not us
            if row is None or not row["alive"]:
                self.lost.set()
                return


@dataclass
class AttemptTiming:
    """Where an attempt's time goes, kept in checkpoint_data["timing"] for `mailsync bench`.
    Pages are prefetched, so fetching overlaps writing: waiting is the part not hidden."""

    started: float
    fetch_ms: float = 0.0  # fetching and parsing pages (the prefetch thread)
    fetch_wait_ms: float = 0.0  # the attempt blocked, waiting for a page
    write_ms: float = 0.0  # page transactions, committed

    def fetch(self, pages: Iterator[Page]) -> Page | None:
        begun = time.perf_counter()
        try:
            return next(pages, None)
        finally:
            self.fetch_ms += (time.perf_counter() - begun) * 1000

    def as_json(self) -> dict[str, float]:
        # elapsed_ms: as the page's transaction begins; the last one ends with the attempt.
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        times = (self.fetch_ms, self.fetch_wait_ms, self.write_ms, elapsed_ms)
        names = ("fetch_ms", "fetch_wait_ms", "write_ms", "elapsed_ms")
        return {name: round(ms, 1) for name, ms in zip(names, times, strict=True)}


@dataclass
class ChunkContext:
    db: Database
    graph: GraphClient
    job: Row
    store: Row
    worker_id: str
    heartbeat_s: float
    stuck_after_s: float
    retry_base_s: float
    retry_max_s: float


def claim(ctx: ChunkContext, chunk_index: int) -> Row | None:
    """Claim this chunk of the job; None when it is already finished.

    A chunk still held by a worker that died (a resumed job after a crash) is taken back
    once its lease has expired; one held by a live worker is waited for, up to twice the
    stuck threshold, then reported busy.
    """
    job = ctx.job
    deadline = time.monotonic() + 2 * ctx.stuck_after_s + ctx.heartbeat_s
    while True:
        current = ctx.db.one(
            "get_chunk_by_index", job["business_id"], job_id=job["id"], chunk_index=chunk_index
        )
        if current is None:
            raise MailsyncError(f"job {job['id']} has no chunk {chunk_index}")
        if current["status"] in ("completed", "failed"):
            return None
        if current["status"] != "processing":
            break
        ctx.db.all(
            "recover_stuck_chunks_of_job", job["business_id"],
            stuck_after_s=ctx.stuck_after_s, job_id=job["id"],
        )  # fmt: skip
        if time.monotonic() > deadline:
            break
        time.sleep(min(1.0, ctx.heartbeat_s / 2))
    if current["status"] == "retrying" and current["next_attempt_at"] is not None:
        _wait_until_due(ctx, current)
    chunk = ctx.db.one(
        "claim_next_chunk_job", job["business_id"], job_id=job["id"], worker_id=ctx.worker_id
    )
    if chunk is None or chunk["chunk_index"] != chunk_index:
        if chunk is not None:  # never hold a chunk we are not going to run
            _release(ctx, chunk, "claimed out of order", "internal")
        raise ChunkBusyError(
            f"chunk {chunk_index} of job {job['id']} is not claimable now "
            f"(status {current['status']}, held by {current['worker_id'] or 'nobody'})"
        )
    return chunk


def _wait_until_due(ctx: ChunkContext, chunk: Row) -> None:
    """Honour the chunk's next_attempt_at (Graph's Retry-After, or our backoff)."""
    row = ctx.db.one("seconds_until_due", ctx.job["business_id"], chunk_id=chunk["id"])
    delay = float(row["seconds"]) if row and row["seconds"] else 0.0
    if delay > 0:
        time.sleep(delay)


def _release(ctx: ChunkContext, chunk: Row, message: str, category: str) -> None:
    ctx.db.one(
        "fail_chunk_job", ctx.job["business_id"], chunk_id=chunk["id"], worker_id=ctx.worker_id,
        attempt=chunk["attempts"], error_message=message, error_category=category,
        retryable=True, retry_delay_s=0.0, api_calls=0, processing_time_ms=0,
    )  # fmt: skip


def run_chunk(ctx: ChunkContext, chunk: Row) -> ChunkOutcome:
    """Run one claimed attempt to completion, or record why it failed and re-raise."""
    started = time.perf_counter()
    calls_before = ctx.graph.api_calls
    progress = dict(chunk["checkpoint_data"] or {})
    try:
        with Heartbeat(ctx.db, chunk, ctx.worker_id, ctx.heartbeat_s) as heartbeat:
            _fetch_and_write(ctx, chunk, progress, heartbeat, started, calls_before)
    except Exception as exc:
        _record_failure(ctx, chunk, exc, started, calls_before)
        raise
    return ChunkOutcome(
        chunk_index=chunk["chunk_index"],
        status="completed",
        attempt=chunk["attempts"],
        emails_processed=progress.get("emails_processed", 0),
        emails_failed=progress.get("emails_failed", 0),
        api_calls=ctx.graph.api_calls - calls_before,
        processing_time_ms=int((time.perf_counter() - started) * 1000),
    )


def _job_position(ctx: ChunkContext) -> tuple[Cursor, bool, int]:
    """The newest checkpoint of the job: cursor, exhausted, emails processed in the job."""
    row = ctx.db.one("latest_checkpoint", ctx.job["business_id"], job_id=ctx.job["id"])
    if row is None:
        return Cursor(), False, 0
    return Cursor.from_json(row["cursor"]), row["exhausted"], row["emails_processed"]


def _fetch_and_write(
    ctx: ChunkContext, chunk: Row, progress: dict[str, Any], heartbeat: Heartbeat,
    started: float, calls_before: int,
) -> None:  # fmt: skip
    cursor, exhausted, job_processed = _job_position(ctx)
    if exhausted:  # an earlier chunk already reached the end of the mailbox
        _write_page(ctx, chunk, progress, None, cursor, True, job_processed, started, calls_before)
        return
    # The last chunk runs until the mailbox is exhausted, however the count has changed.
    is_last = chunk["chunk_index"] == chunk["total_chunks"]
    remaining = None if is_last else chunk["chunk_size"] - progress.get("emails_processed", 0)
    if remaining is not None and remaining <= 0:
        _write_page(ctx, chunk, progress, None, cursor, False, job_processed, started, calls_before)
        return
    pages = ctx.graph.iter_pages(
        ctx.store["mailbox"], ctx.store["folder"], cursor=cursor,
        since=graph_time(ctx.job["sync_from"]), until=graph_time(ctx.job["sync_to"]),
        page_size=ctx.job["page_size"], limit=remaining,
    )  # fmt: skip
    timing = AttemptTiming(started)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-prefetch") as prefetch:
        upcoming: Future[Page | None] = prefetch.submit(timing.fetch, pages)
        while True:
            waited = time.perf_counter()
            page = upcoming.result()
            timing.fetch_wait_ms += (time.perf_counter() - waited) * 1000
            if page is None:
                raise AssertionError("the page iterator ended without a last page")
            if not page.last:  # fetch the next page while this one is written
                upcoming = prefetch.submit(timing.fetch, pages)
            if heartbeat.lost.is_set():
                raise LeaseLostError(f"chunk {chunk['chunk_index']}: lease lost to recovery")
            job_processed += len(page.messages)
            _write_page(
                ctx, chunk, progress, page, page.cursor, page.exhausted, job_processed,
                started, calls_before, done=page.last, timing=timing,
            )  # fmt: skip
            if page.last:
                return


def _write_page(
    ctx: ChunkContext, chunk: Row, progress: dict[str, Any], page: Page | None,
    cursor: Cursor, exhausted: bool, job_processed: int, started: float, calls_before: int,
    *, done: bool = True, timing: AttemptTiming | None = None,
) -> None:  # fmt: skip
    job = ctx.job
    new_progress = {
        "emails_processed": progress.get("emails_processed", 0)
        + (len(page.messages) if page else 0),
        "emails_failed": progress.get("emails_failed", 0) + (len(page.failed_ids) if page else 0),
        "pages": progress.get("pages", 0) + (1 if page else 0),
        "cursor": cursor.to_json(),
    }
    if timing is not None:
        new_progress["timing"] = timing.as_json()
    write_started = time.perf_counter()
    fence = {"chunk_id": chunk["id"], "worker_id": ctx.worker_id, "attempt": chunk["attempts"]}
    with ctx.db.transaction(job["business_id"]) as session:
        # The fence first: it takes the chunk's row lock and refuses a worker that lost it.
        if session.one(
            "record_chunk_progress", **fence, checkpoint_data=new_progress,
            emails_processed=new_progress["emails_processed"],
            emails_failed=new_progress["emails_failed"],
        ) is None:  # fmt: skip
            raise LeaseLostError(f"chunk {chunk['chunk_index']}: claim lost before writing")
        if page is not None:
            write_messages(
                session, business_id=job["business_id"], store_id=job["store_id"],
                job_id=job["id"], messages=page.messages,
            )  # fmt: skip
            session.execute(
                "insert_checkpoint", business_id=job["business_id"], store_id=job["store_id"],
                job_id=job["id"], chunk_id=chunk["id"], chunk_index=chunk["chunk_index"],
                cursor=cursor.to_json(), emails_processed=job_processed, exhausted=exhausted,
            )  # fmt: skip
        if done:
            completed = session.one(
                "complete_chunk_job", **fence,
                emails_processed=new_progress["emails_processed"],
                emails_failed=new_progress["emails_failed"],
                api_calls=ctx.graph.api_calls - calls_before,
                processing_time_ms=int((time.perf_counter() - started) * 1000),
                exhausted=exhausted,
            )  # fmt: skip
            if not completed or not completed["completed"]:
                raise LeaseLostError(f"chunk {chunk['chunk_index']}: claim lost at completion")
    if timing is not None:
        timing.write_ms += (time.perf_counter() - write_started) * 1000
    progress.update(new_progress)  # only once committed


def retry_delay_s(ctx: ChunkContext, attempt: int, exc: BaseException) -> float:
    """Our jittered exponential backoff, unless Graph asked for longer (Retry-After wins)."""
    delay = backoff_delay(attempt - 1, ctx.retry_base_s, ctx.retry_max_s, random.Random())
    retry_after = getattr(exc, "retry_after_s", None)
    return max(delay, retry_after) if retry_after is not None else delay


def _record_failure(
    ctx: ChunkContext, chunk: Row, exc: BaseException, started: float, calls_before: int
) -> None:
    if isinstance(exc, LeaseLostError):
        return  # the chunk is someone else's now: nothing of ours may be written
    message = str(exc) or type(exc).__name__
    ctx.db.one(
        "fail_chunk_job", ctx.job["business_id"], chunk_id=chunk["id"], worker_id=ctx.worker_id,
        attempt=chunk["attempts"], error_message=message, error_category=category_of(exc),
        retryable=is_retryable(exc), retry_delay_s=retry_delay_s(ctx, chunk["attempts"], exc),
        api_calls=ctx.graph.api_calls - calls_before,
        processing_time_ms=int((time.perf_counter() - started) * 1000),
    )  # fmt: skip


def chunk_row(db: Database, job: Row, chunk_index: int) -> Row:
    row = db.one(
        "get_chunk_by_index", job["business_id"], job_id=job["id"], chunk_index=chunk_index
    )
    assert row is not None
    return row


def outcome_of(row: Row) -> ChunkOutcome:
    """The outcome recorded for a finished chunk (a resumed job skips those)."""
    return ChunkOutcome(
        chunk_index=row["chunk_index"],
        status=row["status"],
        attempt=row["attempts"],
        emails_processed=row["emails_processed"],
        emails_failed=row["emails_failed"],
        api_calls=row["api_calls_made"],
        processing_time_ms=row["processing_time_ms"],
        error_category=row["error_category"],
        error_message=row["error_message"],
    )
