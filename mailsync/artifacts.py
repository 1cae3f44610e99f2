"""What a sync shows in the Prefect UI: one table per sync under its mailbox's key, and a
progress bar for the syncs that run long enough to watch.

Keys are what an operator looks for. Each sync adds a version to its mailbox's key
(``mailbox-ada--contoso-example``), sync-all one to its business's
(``sync-all-<business id>``): the Artifacts page shows one card per mailbox, its latest sync
on top and the earlier ones as its history. Keyed by job id (as before), 4 mailboxes made
13 artifacts a cycle, and 10,000 mailboxes every 15 minutes about 2.9 million keys a day
that nobody could search by mailbox.

A sync that changed nothing adds a version all the same (the card then says when the
mailbox was last checked), but a small one: no rows, its counts in the description.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

if TYPE_CHECKING:
    from mailsync.sync.jobs import JobSummary

logger = logging.getLogger(__name__)

FOLDER_COLUMNS = (
    "folder",
    "sync_type",
    "emails_added",
    "emails_updated",
    "emails_deleted",
    "delta_resets",
    "fallback",
    "failed_chunks",
)
# An address made only of these reads back from its slug ('.' -> '-', '@' -> '--'): no two
# such addresses share a slug, since neither part has '--' or starts or ends with a dot.
_PLAIN_ADDRESS = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)*@[a-z0-9]+(\.[a-z0-9]+)*")


def mailbox_key(mailbox: str) -> str:
    """The artifact key of a mailbox: its address as a slug (Prefect's keys allow lowercase
    letters, digits and dashes), plus a short hash of the address when the slug alone could
    be another address's (``a-b@x`` and ``a_b@x`` would both read ``a-b--x``)."""
    address = mailbox.strip().lower()
    local, at, domain = address.rpartition("@")
    slug = "--".join(_slug(part) for part in ((local, domain) if at else (domain,)))
    key = f"mailbox-{slug}"
    if not _PLAIN_ADDRESS.fullmatch(address):
        key += "-" + hashlib.sha256(address.encode()).hexdigest()[:8]
    return key


def sync_all_key(business_id: str) -> str:
    """The artifact key of a business's sync-all runs."""
    return f"sync-all-{_slug(business_id)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class ChunkProgress:
    """The job's progress artifact, chunks finished of the plan, for syncs worth watching.

    It is created only once a chunk has finished, chunks remain, and the sync has run
    ``watch_after_s`` (MAILSYNC_PROGRESS_AFTER_S, 10 s by default). A sync that changed
    nothing is done in well under a second, one delta chunk per folder, and a bar that goes
    from 0 to 100 % between two refreshes of the page shows nobody anything: at 10,000
    mailboxes every 15 minutes those bars were a million artifacts a day. Counting by time
    rather than by chunks left: a mailbox of 30 folders plans 30 quick delta chunks, a
    first sync of a large folder one slow chunk after another.

    Reporting never holds up the sync: the artifact is created and updated by a thread of
    its own, the sync's Prefect context copied to it. An update is an API round trip (~50 ms
    here), and a Prefect server on SQLite under load has answered one only after the
    client's 60 s timeout, with the mailbox's sync waiting on it. Updates go at most once a
    second, a new one only when the last is through (the latest value wins), and always for
    the last chunk; ``close`` waits for that one a few seconds at most.
    """

    EVERY_S = 1.0
    CLOSE_WAIT_S = 5.0
    WATCH_AFTER_S = 10.0

    def __init__(
        self, job_id: str, total_chunks: int, watch_after_s: float = WATCH_AFTER_S
    ) -> None:
        self.total = total_chunks
        self.outcomes: list[dict[str, Any]] = []
        self._job_id = job_id
        self._started = time.monotonic()
        self._watch_after_s = watch_after_s
        self._reporter: ThreadPoolExecutor | None = None
        self._artifact: Future[UUID | None] | None = None
        self._pending: Future[Any] | None = None
        self._last_update = self._started

    @property
    def published(self) -> bool:
        """Whether this sync has a progress artifact (it ran long enough to be watched)."""
        return self._artifact is not None

    def add(self, outcome: dict[str, Any]) -> None:
        self.outcomes.append(outcome)
        done = len(self.outcomes)
        now = time.monotonic()
        if self._artifact is None:
            if done < self.total and now - self._started >= self._watch_after_s:
                self._start(100.0 * done / self.total)
            return
        due = now - self._last_update >= self.EVERY_S and self._idle()
        if done == self.total or due:
            self._pending = self._submit(self._update, 100.0 * done / self.total)
            self._last_update = now

    def close(self) -> None:
        if self._reporter is None:
            return
        wait([self._pending] if self._pending else [], timeout=self.CLOSE_WAIT_S)
        self._reporter.shutdown(wait=False)

    def _start(self, progress: float) -> None:
        self._reporter = ThreadPoolExecutor(1, thread_name_prefix="progress-artifact")
        description = f"sync job {self._job_id}: chunks finished of {self.total}"
        self._artifact = self._pending = self._submit(_create, progress, description)
        self._last_update = time.monotonic()

    def _idle(self) -> bool:
        return self._pending is None or self._pending.done()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        assert self._reporter is not None
        return self._reporter.submit(contextvars.copy_context().run, fn, *args)

    def _update(self, progress: float) -> None:
        assert self._artifact is not None
        artifact_id = self._artifact.result()
        if artifact_id is not None:
            _reported(update_progress_artifact, artifact_id, progress=progress)


def _create(progress: float, description: str) -> UUID | None:
    created = _reported(create_progress_artifact, progress=progress, description=description)
    return created if isinstance(created, UUID) else None


def _reported(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A call to Prefect's API for the UI: its failure is logged, never the sync's."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # an artifact is worth a warning, not a failed sync
        logger.warning("artifact not published: %s", exc)
        return None


def changed_nothing(summary: JobSummary) -> bool:
    """Whether a sync completed without adding, changing or removing a message, or anything
    else an operator would look at (a delta reset, a fallback, a failed chunk)."""
    counts = ("emails_added", "emails_updated", "emails_deleted", "delta_resets", "chunks_failed")
    return (
        summary["status"] == "completed"
        and not any(summary.get(c) for c in counts)
        and not (summary.get("delta_fallbacks"))
    )


def sync_description(summary: JobSummary) -> str:
    """One line: the mailbox, what the sync did, its job (to look it up in Postgres)."""
    # folders_unchanged: folders whose round came back empty at planning (no chunk, no row)
    folders = len(summary["folders"]) + int(
        summary.get("folders_unchanged") or 0
    )  # no chunk: unchanged
    elapsed = summary.get("elapsed_s")
    took = f" in {elapsed:.1f} s" if isinstance(elapsed, int | float) else ""
    head = f"{summary['mailbox']}: {folders} folder{'' if folders == 1 else 's'} checked{took}"
    if changed_nothing(summary):
        return f"{head}, nothing changed (job {summary['job_id']})"
    return (
        f"{head}, {summary['sync_type']} sync {summary['status']}: "
        f"+{summary['emails_added']} ~{summary['emails_updated']} -{summary['emails_deleted']}, "
        f"{summary['emails_stored']} messages stored, {summary['delta_resets']} delta resets, "
        f"{summary['chunks_failed']} chunks failed, {summary['api_calls']} API calls "
        f"(job {summary['job_id']})"
    )


def publish_sync(summary: JobSummary) -> None:
    """The finished sync as a version of its mailbox's table artifact: a row per folder
    (added, updated, deleted, delta resets, failed chunks), or none when nothing changed;
    the totals in the description. The chunks' own numbers are in `mailsync report`."""
    quiet = changed_nothing(summary)
    rows = [] if quiet else [{c: f.get(c) for c in FOLDER_COLUMNS} for f in summary["folders"]]
    _reported(
        create_table_artifact,
        key=mailbox_key(summary["mailbox"] or summary["store_id"]),
        table=rows,
        description=sync_description(summary),
    )
