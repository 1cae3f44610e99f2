"""What a sync shows in the Prefect UI: a progress bar and a table of its chunks."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

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

    An artifact update is an API round trip (~50 ms here), so it is sent at most once a
    second, and always for the last chunk.
    """

    EVERY_S = 1.0

    def __init__(self, job_id: str, total_chunks: int) -> None:
        self.total = total_chunks
        self.outcomes: list[dict[str, Any]] = []
        self._artifact_id: UUID = create_progress_artifact(
            progress=0.0, description=f"sync job {job_id}: chunks finished of {total_chunks}"
        )  # type: ignore[assignment]
        self._last_update = time.monotonic()

    def add(self, outcome: dict[str, Any]) -> None:
        self.outcomes.append(outcome)
        done = len(self.outcomes)
        if done == self.total or time.monotonic() - self._last_update >= self.EVERY_S:
            update_progress_artifact(self._artifact_id, progress=100.0 * done / self.total)
            self._last_update = time.monotonic()


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
