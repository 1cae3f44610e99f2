"""One attempt at one chunk: claim it, fetch pages from the job's cursor, write, complete.

Where a chunk is claimed: ``claim_chunk`` below, one SQL statement (``claim_chunk`` in
sql/migrations/0005). Where its retry is decided: the chunk row (``fail_chunk_job``), told
the cause's category and our backoff; the attempt then raises ``ChunkAttemptError`` with
that decision, and Prefect's task retry only re-enters (docs/design.md, "Retries").

Each page is one transaction: the page's rows, the fence (do we still hold the chunk?), the
job's new checkpoint and, on the chunk's last page, its completion. A crash anywhere
leaves a page wholly written or not at all, and the next attempt (or chunk) continues
from the newest checkpoint. The next page is fetched (mailsync.graph.prefetch) while the
current one is written, on the attempt's own thread and connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from mailsync import validate
from mailsync.config import Settings
from mailsync.errors import (
    ChunkAttemptError,
    ChunkBusyError,
    InvalidInputError,
    LeaseLostError,
    MailsyncError,
    category_of,
    is_retryable,
)
from mailsync.graph.backoff import retry_delay
from mailsync.graph.client import Cursor, GraphClient, Page
from mailsync.graph.messages import EmailRecord
from mailsync.graph.prefetch import PagePrefetch
from mailsync.store.db import Database, Row, Session
from mailsync.store.rows import ChunkRow, JobRow, StoreRow
from mailsync.sync import shutdown
from mailsync.sync.heartbeat import Heartbeat
from mailsync.sync.ingest import write_messages
from mailsync.sync.jobs import graph_time

logger = logging.getLogger(__name__)
P = TypeVar("P")  # a page: of a keyset listing (Page) or of a delta round (DeltaPage)


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

    @classmethod
    def of_chunk(cls, chunk: ChunkRow) -> ChunkOutcome:
        """The outcome recorded for a finished chunk (a resumed job skips those)."""
        return cls(
            chunk_index=chunk.chunk_index,
            status=chunk.status,
            attempt=chunk.attempts,
            emails_processed=chunk.emails_processed,
            emails_failed=chunk.emails_failed,
            api_calls=chunk.api_calls_made,
            processing_time_ms=chunk.processing_time_ms,
            error_category=chunk.error_category,
            error_message=chunk.error_message,
        )


@dataclass(frozen=True)
class Position:
    """Where the job continues: its newest checkpoint."""

    cursor: Cursor = field(default_factory=Cursor)  # a keyset listing's
    exhausted: bool = False  # an earlier page reached the end of the folder
    emails_processed: int = 0  # in the whole job so far
    state: dict[str, Any] = field(default_factory=dict)  # the checkpoint as stored (a delta
    # round's position: mailsync.sync.rounds.RoundState)

    @classmethod
    def of_row(cls, row: Row | None) -> Position:
        if row is None:
            return cls()
        state = dict(row["cursor"] or {})
        return cls(Cursor.from_json(state), row["exhausted"], row["emails_processed"], state)


@dataclass(frozen=True)
class Worker:
    """Who runs attempts, and the lease they keep (mailsync.config's defaults)."""

    worker_id: str
    heartbeat_s: float
    stuck_after_s: float
    retry_base_s: float
    retry_max_s: float

    @classmethod
    def of(cls, settings: Settings, worker_id: str) -> Worker:
        return cls(
            worker_id,
            settings.heartbeat_s,
            settings.stuck_after_s,
            settings.retry_base_s,
            settings.retry_max_s,
        )


@dataclass(frozen=True)
class Claim:
    """What ``claim_chunk`` answers: the chunk, its job and store, and the job's position in
    the chunk's folder (None when the chunk had already finished: completed or failed)."""

    chunk: ChunkRow
    job: JobRow
    store: StoreRow
    position: Position | None
    folder_path: str | None = None  # "Inbox/Projects", as the folder was last listed

    @property
    def folder(self) -> str:
        """The chunk's folder as a person reads it: its path, else its id."""
        return self.folder_path or str(self.chunk.folder_id or self.store.folder)


def claim_chunk(
    db: Database,
    job_id: UUID | str,
    chunk_index: int,
    worker: Worker,
    *,
    business_id: UUID | None = None,
    sleep: Callable[[float], None] = shutdown.wait,
) -> Claim:
    """Claim chunk ``chunk_index`` of the job with all its attempt starts from, in one
    transaction and one round trip: the claim (one statement), then the job's newest
    checkpoint in the chunk's folder (read after the claim, which may have waited for a
    page's commit), the job, its store and the folder's path. The tenant is
    ``business_id``, or the job's own when the caller knows only its id
    (``Database.pipelined``). The claim's lease starts with it (heartbeat_at): the
    heartbeat's first beat is one interval later.

    This only waits as long as the claim's answer says: until a retrying chunk is due, or
    until a live holder's lease would expire (up to two stuck thresholds, then
    ``ChunkBusyError``).
    """
    job_uuid = validate.job_id(job_id)
    patience = time.monotonic() + 2 * worker.stuck_after_s
    while True:
        with db.pipelined(business_id, job_id=job_uuid) as pipeline:
            claimed = pipeline.send(
                "claim_chunk",
                job_id=job_uuid,
                chunk_index=chunk_index,
                worker_id=worker.worker_id,
                stuck_after_s=worker.stuck_after_s,
            )
            checkpoint = pipeline.send(
                "latest_checkpoint_of_chunk", job_id=job_uuid, chunk_index=chunk_index
            )
            job = pipeline.send("get_sync_job", job_id=job_uuid)
            store = pipeline.send("get_job_store", job_id=job_uuid)
            folder = pipeline.send("folder_path_of_chunk", job_id=job_uuid, chunk_index=chunk_index)
        row, position = claimed.one(), checkpoint.one()
        job_row, store_row, folder_row = job.one(), store.one(), folder.one()
        path = folder_row["path"] if folder_row else None
        if job_row is None or store_row is None:  # unknown, or another business's
            raise InvalidInputError(f"no sync job {job_id}")
        if row is None:
            raise InvalidInputError(f"job {job_id} has no chunk {chunk_index}")
        outcome, wait_s = row.pop("outcome"), float(row.pop("wait_s"))
        chunk, job_of, store_of = ChunkRow.of(row), JobRow.of(job_row), StoreRow.of(store_row)
        if outcome == "claimed":
            return Claim(chunk, job_of, store_of, Position.of_row(position), path)
        if outcome == "finished":
            return Claim(chunk, job_of, store_of, None, path)
        if outcome == "blocked" or (outcome == "busy" and time.monotonic() + wait_s > patience):
            raise ChunkBusyError(
                f"chunk {chunk_index} of job {job_id} is not claimable: {outcome} "
                f"(held by {row['worker_id'] or 'nobody'})"
            )
        sleep(wait_s + 0.01)  # not_due, or busy with a lease about to expire
        shutdown.check()


@dataclass
class AttemptTiming:
    """Where an attempt's time goes, kept in checkpoint_data["timing"] for `mailsync bench`.
    Pages are prefetched, so fetching overlaps writing: waiting is the part not hidden."""

    started: float
    fetch_ms: float = 0.0  # fetching and parsing pages (the prefetch thread)
    fetch_wait_ms: float = 0.0  # the attempt blocked, waiting for a page
    write_ms: float = 0.0  # page transactions, committed

    def wait(self, pages: Iterator[P]) -> P | None:
        """The next page of a pager that requests ahead itself (mailsync.graph.delta): the time
        blocked is waiting, parsing included."""
        begun = time.perf_counter()
        try:
            return next(pages, None)
        finally:
            waited_ms = (time.perf_counter() - begun) * 1000
            self.fetch_ms += waited_ms
            self.fetch_wait_ms += waited_ms

    def wait_ahead(self, pages: Iterator[P]) -> P | None:
        """The next page of a pager whose pages are fetched in a thread (``fetching``): the
        time blocked is waiting."""
        begun = time.perf_counter()
        try:
            return next(pages, None)
        finally:
            self.fetch_wait_ms += (time.perf_counter() - begun) * 1000

    def fetching(self, pages: Iterator[P]) -> Iterator[P]:
        """The pages, the time each takes to come counted as fetching (the prefetch thread)."""
        while True:
            begun = time.perf_counter()
            page = next(pages, None)
            self.fetch_ms += (time.perf_counter() - begun) * 1000
            if page is None:
                return
            yield page

    def as_json(self, writing_ms: float = 0.0) -> dict[str, float]:
        """The times so far, from inside a page's transaction: ``write_ms`` of the pages
        committed, ``writing_ms`` of this one's transaction so far (its rows); ``elapsed_ms``
        is now. What the transaction spends after this (fence, completion, commit) is the
        attempt's time beyond ``elapsed_ms``."""
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        times = (self.fetch_ms, self.fetch_wait_ms, self.write_ms, writing_ms, elapsed_ms)
        names = ("fetch_ms", "fetch_wait_ms", "write_ms", "writing_ms", "elapsed_ms")
        return {name: round(ms, 1) for name, ms in zip(names, times, strict=True)}


class Attempt:
    """One claimed attempt at one chunk: its pages, then its completion or its failure.

    Subclasses say how the pages come (``_work``): ``WindowAttempt`` lists a folder by keyset
    pages, ``mailsync.sync.rounds.DeltaAttempt`` follows one delta round. Every page is written
    by ``_commit``, one transaction each.
    """

    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        job: JobRow,
        store: StoreRow,
        worker: Worker,
        chunk: ChunkRow,
        position: Position,
        *,
        prefetch: PagePrefetch,
    ) -> None:
        self.db, self.graph, self.job, self.store, self.worker = db, graph, job, store, worker
        self.prefetch = prefetch  # the process's (mailsync.runtime): its waits see a stop
        self.chunk = chunk
        self.position = position  # where the job stands in the chunk's folder
        self.progress: dict[str, Any] = dict(chunk.checkpoint_data or {})
        self.timing = AttemptTiming(time.perf_counter())
        self.calls_before = graph.api_calls
        self.fence = {
            "chunk_id": chunk.id,
            "worker_id": worker.worker_id,
            "attempt": chunk.attempts,
        }
        self.heartbeat: Heartbeat | None = None

    @property
    def index(self) -> int:
        return int(self.chunk.chunk_index)

    @property
    def folder_id(self) -> str:
        # Chunks planned before folders existed (0006) name the store's one folder.
        if self.chunk.folder_id:
            return str(self.chunk.folder_id)
        return "inbox" if self.store.folder == "all" else str(self.store.folder)

    def run(self) -> ChunkOutcome:
        """Run the attempt to completion; or record why it failed and raise
        ``ChunkAttemptError`` (or ``LeaseLostError`` when the chunk is no longer ours)."""
        try:
            with Heartbeat(
                self.db, self.chunk, self.worker.worker_id, self.worker.heartbeat_s
            ) as self.heartbeat:
                self._work()
        except LeaseLostError:
            raise  # the chunk is someone else's now: nothing of ours may be written
        except Exception as exc:
            raise self._record_failure(exc) from exc
        except BaseException as stop:  # Ctrl-C, SIGTERM (a worker, a cancelled run)
            self._release(stop)
            raise
        return ChunkOutcome(
            chunk_index=self.index,
            status="completed",
            attempt=self.chunk.attempts,
            emails_processed=self.progress.get("emails_processed", 0),
            emails_failed=self.progress.get("emails_failed", 0),
            api_calls=self._api_calls(),
            processing_time_ms=self._elapsed_ms(),
        )

    def _work(self) -> None:
        raise NotImplementedError

    def _check_lease(self) -> None:
        shutdown.check()  # a stop asked for: give the chunk back (run's BaseException path)
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise LeaseLostError(f"chunk {self.index}: lease lost to recovery")

    def _commit(
        self,
        *,
        messages: Sequence[EmailRecord] = (),
        failed: int = 0,
        checkpoint: dict[str, Any] | None = None,
        first: Callable[[Session], None] | None = None,
        also: Callable[[Session], None] | None = None,
        done: bool = False,
        exhausted: bool = False,
    ) -> None:
        """One transaction, on the attempt's own thread and connection: whatever ``first``
        writes, the page's messages, the fence, whatever ``also`` writes (the checkpoint,
        removals, a delta link), the chunk's progress and, when ``done``, its completion.
        Progress is kept in memory only once committed.

        Pipelined, three round trips: the begin, the tenant and the statements before the
        COPY go with it, the upsert is one trip, and everything after it travels with the
        commit (the fence raises in the database when the claim is gone, so nothing of a
        lost claim commits). Staging the next page on a second connection while this one
        commits was tried and measured; it did not pay for its thread, its connection and
        its hand-over (docs/benchmark.md, "One write path")."""
        before = self.progress
        progress = {
            **before,
            **(checkpoint or {}),
            "emails_processed": before.get("emails_processed", 0) + len(messages),
            "emails_failed": before.get("emails_failed", 0) + failed,
            "pages": before.get("pages", 0) + (1 if messages or failed or checkpoint else 0),
        }
        write_started = time.perf_counter()
        job = self.job
        with self.db.pipelined(job.business_id) as session:
            if first is not None:
                first(session)
            written = write_messages(
                session,
                business_id=job.business_id,
                store_id=job.store_id,
                job_id=job.id,
                messages=list(messages),
            )
            progress["emails_added"] = before.get("emails_added", 0) + written.inserted
            progress["emails_updated"] = before.get("emails_updated", 0) + written.updated
            progress["timing"] = self.timing.as_json((time.perf_counter() - write_started) * 1000)
            # The fence: it takes the chunk's row lock and fails the transaction for a worker
            # that lost it. (After the rows, so the lock is held for the least time.)
            session.execute(
                "record_chunk_page",
                **self.fence,
                checkpoint_data=progress,
                emails_processed=progress["emails_processed"],
                emails_failed=progress["emails_failed"],
                emails_added=progress["emails_added"],
                emails_updated=progress["emails_updated"],
                delta_resets=progress.get("delta_resets", 0),
            )
            if also is not None:
                also(session)
            completed = (
                session.send(
                    "complete_chunk_job",
                    **self.fence,
                    emails_processed=progress["emails_processed"],
                    emails_failed=progress["emails_failed"],
                    api_calls=self._api_calls(),
                    processing_time_ms=self._elapsed_ms(),
                    exhausted=exhausted,
                )
                if done
                else None
            )
        # Fenced like the page, in the same transaction: it cannot find the claim gone.
        if completed is not None and not (completed.one() or {}).get("completed"):
            raise LeaseLostError(f"chunk {self.index}: claim lost at completion")
        self.timing.write_ms += (time.perf_counter() - write_started) * 1000
        self.progress = progress

    def _checkpoint(
        self, cursor: dict[str, Any], emails_processed: int, *, exhausted: bool
    ) -> Callable[[Session], None]:
        """The job's new position in the chunk's folder, to write in a page's transaction:
        where the next page, attempt or chunk of the folder continues."""
        job = self.job

        def insert(session: Session) -> None:
            session.execute(
                "insert_checkpoint",
                business_id=job.business_id,
                store_id=job.store_id,
                job_id=job.id,
                chunk_id=self.chunk.id,
                chunk_index=self.index,
                folder_id=self.chunk.folder_id,  # as the claim reads it back (NULL: pre-0006)
                cursor=cursor,
                emails_processed=emails_processed,
                exhausted=exhausted,
            )

        return insert

    def _record_failure(self, exc: Exception) -> ChunkAttemptError:
        """Tell the chunk row why the attempt failed; the row decides retrying or failed."""
        attempt = self.chunk.attempts
        message = str(exc) or type(exc).__name__
        retry_after = getattr(exc, "retry_after_s", None)
        row = self.db.one(
            "fail_chunk_job",
            self.job.business_id,
            **self.fence,
            error_message=message,
            error_category=category_of(exc),
            retryable=is_retryable(exc),
            retry_delay_s=retry_delay(
                attempt - 1, self.worker.retry_base_s, self.worker.retry_max_s, retry_after
            ),
            api_calls=self._api_calls(),
            processing_time_ms=self._elapsed_ms(),
        )
        status = row["status"] if row else None
        if status is None:
            raise LeaseLostError(f"chunk {self.index}: claim lost before recording: {message}")
        return ChunkAttemptError(
            f"chunk {self.index} attempt {attempt} failed ({category_of(exc)}), now {status}: "
            f"{message}",
            category=category_of(exc),
            will_retry=status == "retrying",
        )

    def _release(self, stop: BaseException) -> None:
        """Give the chunk back at once, its attempt not counted: told to stop is not a
        failure, and the next claim should not wait for the lease to expire."""
        reason = f"stopped by {type(stop).__name__}: {stop}".rstrip(": ")
        try:
            self.db.one(
                "release_chunk_job",
                self.job.business_id,
                **self.fence,
                reason=reason,
                api_calls=self._api_calls(),
                processing_time_ms=self._elapsed_ms(),
            )
        except MailsyncError as exc:  # the lease expires, and recovery takes it back
            logger.warning("chunk %s: could not release it (%s)", self.index, exc)

    def _api_calls(self) -> int:
        return self.graph.api_calls - self.calls_before

    def _elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.timing.started) * 1000)


class WindowAttempt(Attempt):
    """A window chunk: the next ``chunk_size`` messages of its folder, by keyset pages from
    the job's position in that folder (its newest checkpoint there)."""

    def _work(self) -> None:
        if self.position.exhausted:  # an earlier chunk already reached the end of the folder
            self._commit(done=True, exhausted=True)
            return
        # The folder's last chunk runs until the folder is exhausted, whatever the count.
        processed = self.progress.get("emails_processed", 0)
        last = self.chunk.last_in_folder or self.index == self.chunk.total_chunks
        remaining = None if last else self.chunk.chunk_size - processed
        if remaining is not None and remaining <= 0:
            self._commit(done=True)
            return
        pages = self.graph.iter_pages(
            self.store.mailbox,
            self.folder_id,
            cursor=self.position.cursor,
            since=graph_time(self.job.sync_from),
            until=graph_time(self.job.sync_to),
            page_size=self.job.page_size,
            limit=remaining,
        )
        with closing(self.prefetch.ahead(self.timing.fetching(pages))) as ahead:
            while (page := self.timing.wait_ahead(ahead)) is not None:
                self._check_lease()
                self._write(page)

    def _write(self, page: Page) -> None:
        position = Position(
            page.cursor, page.exhausted, self.position.emails_processed + len(page.messages)
        )
        checkpoint = self._checkpoint(
            position.cursor.to_json(), position.emails_processed, exhausted=position.exhausted
        )

        self._commit(
            messages=page.messages,
            failed=len(page.failed_ids),
            checkpoint={"cursor": position.cursor.to_json()},
            also=checkpoint,
            done=page.last,
            exhausted=position.exhausted,
        )
        self.position = position
