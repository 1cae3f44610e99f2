"""What a sync shows in the Prefect UI: a progress bar and a table of its chunks."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

logger = logging.getLogger(__name__)

CHUNK_COLUMNS = (
    "chunk_index",
    "status",
    "attempt",
    "emails_processed",
    "emails_failed",
    "api_calls",
    "processing_time_ms",
    "error_category",
)


class ChunkProgress:
    """The job's progress artifact: chunks finished of the plan.

    Reporting never holds up the sync: the artifact is created and updated by a thread of
    its own, the sync's Prefect context copied to it. An update is an API round trip (~50 ms
    here), and a Prefect server on SQLite under load has answered one only after the
    client's 60 s timeout, with the mailbox's sync waiting on it. Updates go at most once a
    second, a new one only when the last is through (the latest value wins), and always for
    the last chunk; ``close`` waits for that one a few seconds at most.
    """

    EVERY_S = 1.0
    CLOSE_WAIT_S = 5.0

    def __init__(self, job_id: str, total_chunks: int) -> None:
        self.total = total_chunks
        self.outcomes: list[dict[str, Any]] = []
        self._reporter = ThreadPoolExecutor(1, thread_name_prefix="progress-artifact")
        self._artifact: Future[UUID | None] = self._submit(
            _create, f"sync job {job_id}: chunks finished of {total_chunks}"
        )
        self._pending: Future[Any] = self._artifact
        self._last_update = time.monotonic()

    def add(self, outcome: dict[str, Any]) -> None:
        self.outcomes.append(outcome)
        done = len(self.outcomes)
        due = time.monotonic() - self._last_update >= self.EVERY_S and self._pending.done()
        if done == self.total or due:
            self._pending = self._submit(self._update, 100.0 * done / self.total)
            self._last_update = time.monotonic()

    def close(self) -> None:
        wait([self._pending], timeout=self.CLOSE_WAIT_S)
        self._reporter.shutdown(wait=False)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._reporter.submit(contextvars.copy_context().run, fn, *args)

    def _update(self, progress: float) -> None:
        artifact_id = self._artifact.result()
        if artifact_id is not None:
            _reported(update_progress_artifact, artifact_id, progress=progress)


def _create(description: str) -> UUID | None:
    created = _reported(create_progress_artifact, progress=0.0, description=description)
    return created if isinstance(created, UUID) else None


def _reported(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A call to Prefect's API for the UI: its failure is logged, never the sync's."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # an artifact is worth a warning, not a failed sync
        logger.warning("progress artifact not updated: %s", exc)
        return None


def publish_job_table(summary: dict[str, Any], outcomes: list[dict[str, Any]]) -> None:
    """The finished job as two table artifacts: per folder (added, updated, deleted, delta
    resets) and per chunk, the job's totals in their descriptions."""
    job_id = summary["job_id"]
    totals = (
        f"sync job {job_id} ({summary['sync_type']}): {summary['status']}, "
        f"{summary['emails_stored']} messages stored; +{summary['emails_added']} "
        f"~{summary['emails_updated']} -{summary['emails_deleted']}, "
        f"{summary['delta_resets']} delta resets, {summary['api_calls']} API calls"
    )
    create_table_artifact(
        key=f"sync-job-{job_id}-folders", table=summary["folders"], description=totals
    )
    create_table_artifact(
        key=f"sync-job-{job_id}",
        table=[{key: outcome.get(key) for key in CHUNK_COLUMNS} for outcome in outcomes],
        description=totals,
    )
