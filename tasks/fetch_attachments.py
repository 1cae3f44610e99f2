"""Task: fetch the attachments a job's pages marked, after its chunks (sync.attachments)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.config import attachments_mode
from mailsync.runtime import get_runtime
from mailsync.store.rows import JobRow
from mailsync.sync.attachments import Target, fetch_attachments
from mailsync.sync.jobs import load_job, load_store
from mailsync.tasks.retry import only_retryable


def attachments_pending(job: JobRow, mode: str | None = None) -> bool:
    """Whether the job's store has attachments to list or fetch (in ``mode``): one short
    statement instead of the task run. Most syncs of a mailbox kept current find nothing
    new, and the task's run, its job and store reads and its worker threads' claims were
    a large part of such a sync's CPU (with pipelining: 88 -> 53 ms a mailbox, process and
    Postgres; docs/benchmark.md, issue 23)."""
    runtime = get_runtime()
    mode = attachments_mode(mode) if mode else runtime.settings.attachments
    if mode == "none":
        return False
    row = runtime.db.one("store_attachments_pending", job.business_id, store_id=job.store_id)
    return bool(row and (row["listings"] or (mode == "content" and row["contents"])))


# Retried only for what is worth it (a database outage): an attachment's own failures are
# recorded on its row and never fail the task. Each retry is a new run: it tries the
# attachments the failed run left pending once more.
@task(
    name="fetch-attachments",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=only_retryable,
)
def fetch_job_attachments(
    job_id: str, graph_url: str | None = None, mode: str | None = None
) -> dict[str, Any]:
    runtime = get_runtime()
    settings = runtime.settings
    mode = attachments_mode(mode) if mode else settings.attachments
    job = load_job(runtime.db, job_id)
    store = load_store(runtime.db, job)
    target = Target(job.business_id, job.store_id, store.mailbox, job.id)
    counts = fetch_attachments(
        runtime.db,
        runtime.graph(graph_url),
        target,
        mode=mode,
        max_bytes=int(settings.attachment_max_mb * 1024 * 1024),
    )
    result = counts.as_dict()
    get_run_logger().info("attachments (%s): %s", mode, result)
    return result
