"""Flow: sync one mailbox folder into Postgres, chunk by chunk, in order.

open (or resume) the job → plan chunks from Graph's count → for each chunk, in order, the
retrying sync-chunk task → close the job (completed / partial_failure) → report.
"""

from __future__ import annotations

import time
from typing import Any

from mailsync.tasks.plan import plan_chunks
from mailsync.tasks.retry import retry_delays
from mailsync.tasks.sync_chunk import sync_chunk
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from mailsync.errors import MailsyncError
from mailsync.jobs import (
    SyncRequest,
    default_business_id,
    fail_job,
    finish_job,
    job_summary,
    load_job,
    open_job,
    start_job,
)
from mailsync.runtime import get_runtime

PROGRESS_EVERY_S = 1.0


@flow(name="sync-mailbox", log_prints=False)
def sync_mailbox(
    mailbox: str | None = None,
    folder: str = "inbox",
    business_id: str | None = None,
    sync_from: str | None = None,
    sync_to: str | None = None,
    chunk_size: int | None = None,
    page_size: int | None = None,
    job_id: str | None = None,
    graph_url: str | None = None,
) -> dict[str, Any]:
    """Sync ``mailbox`` (or resume ``job_id``); returns the job's summary."""
    runtime = get_runtime()
    settings = runtime.settings
    logger = get_run_logger()
    runtime.graph_url(graph_url)  # another Graph host is refused before anything is written
    if job_id is None:
        if not mailbox:
            raise MailsyncError("sync-mailbox needs a mailbox or the job_id of a job to resume")
        request = SyncRequest.checked(
            business_id=business_id or default_business_id(settings.tenant_id),
            mailbox=mailbox,
            folder=folder,
            sync_from=sync_from,
            sync_to=sync_to,
            chunk_size=chunk_size or settings.chunk_size,
            page_size=page_size or settings.page_size,
        )
        job, resumed = open_job(runtime.db, request)
    else:
        job, resumed = load_job(runtime.db, job_id), True
    job = start_job(runtime.db, job)
    job_id = str(job["id"])
    logger.info("%s job %s", "resuming" if resumed else "starting", job_id)

    try:
        plan = plan_chunks(job_id, graph_url)
    except MailsyncError as exc:
        # Nothing can be synced without a plan (unknown mailbox, refused credentials).
        fail_job(runtime.db, job, str(exc), exc.category)
        raise

    total = plan["total_chunks"]
    progress_id = create_progress_artifact(
        progress=0.0, description=f"sync job {job_id}: chunks finished of {total}"
    )
    chunk_task = sync_chunk.with_options(
        retries=settings.max_attempts - 1,
        retry_delay_seconds=retry_delays(settings, settings.max_attempts - 1),
    )
    outcomes: list[dict[str, Any]] = []
    last_progress = time.monotonic()
    for index in range(1, total + 1):
        state = chunk_task(job_id, index, graph_url, return_state=True)
        if state.is_completed():
            outcomes.append(state.result())
        else:
            logger.warning("chunk %s failed for good: %s", index, state.message)
            outcomes.append(
                {"chunk_index": index, "status": "failed", "error_message": state.message}
            )
        # An artifact update is an API round trip (~50 ms here): at most one a second.
        if index == total or time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            update_progress_artifact(progress_id, progress=100.0 * index / total)
            last_progress = time.monotonic()

    status = finish_job(runtime.db, job)
    summary = job_summary(runtime.db, job["id"])
    create_table_artifact(
        key=f"sync-job-{job_id}",
        table=[_chunk_row(o) for o in outcomes],
        description=(
            f"sync job {job_id}: {status}, {summary['emails_stored']} messages stored, "
            f"{summary['api_calls']} API calls"
        ),
    )
    logger.info("job %s %s: %s", job_id, status, summary)
    return summary


def _chunk_row(outcome: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "chunk_index", "status", "attempt", "emails_processed", "emails_failed", "api_calls",
        "processing_time_ms", "error_category",
    )  # fmt: skip
    return {key: outcome.get(key) for key in keys}
