"""Flow: sync a mailbox (every folder, or one) into Postgres, chunk by chunk, in order.

open (or resume) the job → plan: list the folders; a folder read from scratch is its delta
round cut into chunks (sized by Graph's count), an incremental folder one delta chunk, a
sync window's folder window chunks → each chunk, in order, by the
sync-chunk task (its chunk row decides retries) → close the job (removals applied) → its
summary.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, flow, get_run_logger

from mailsync.artifacts import ChunkProgress, publish_job_table
from mailsync.errors import ChunkAttemptError, MailsyncError, SyncIncompleteError
from mailsync.runtime import get_runtime
from mailsync.sync.jobs import begin_job, fail_job, finish_job, incomplete_message
from mailsync.tasks.plan import plan_chunks
from mailsync.tasks.sync_chunk import sync_chunk


@flow(name="sync-mailbox", log_prints=False)
def sync_mailbox(
    mailbox: str | None = None,
    folder: str = "all",
    business_id: str | None = None,
    sync_from: str | None = None,
    sync_to: str | None = None,
    chunk_size: int | None = None,
    page_size: int | None = None,
    job_id: str | None = None,
    graph_url: str | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Sync ``mailbox``'s ``folder`` (``all``: every folder; or a well-known name or id), or
    resume ``job_id``: a folder's first sync lists it in full, later ones follow its delta
    (``full``: list every folder in full again). Returns the job's summary."""
    runtime = get_runtime()
    runtime.graph_url(graph_url)  # another Graph host is refused before anything is written
    job, resumed = begin_job(
        runtime.db,
        runtime.settings,
        mailbox=mailbox,
        folder=folder,
        business_id=business_id,
        sync_from=sync_from,
        sync_to=sync_to,
        chunk_size=chunk_size,
        page_size=page_size,
        job_id=job_id,
        full=full,
    )
    job_id = str(job["id"])
    get_run_logger().info("%s job %s", "resuming" if resumed else "starting", job_id)
    try:
        plan = plan_chunks(job_id, graph_url)
    except MailsyncError as exc:  # nothing can be synced without a plan
        fail_job(runtime.db, job, str(exc), exc.category)
        raise
    chunk_task = sync_chunk.with_options(retries=plan["max_attempts"])
    progress = ChunkProgress(job_id, plan["total_chunks"])
    for index in range(1, plan["total_chunks"] + 1):
        outcome = _run_chunk(chunk_task, job_id, index, graph_url)
        progress.add(outcome)
        if outcome["status"] == "unfinished":  # later chunks start where this one stops
            break
    summary = finish_job(runtime.db, job)
    progress.close()
    publish_job_table(summary, progress.outcomes)
    get_run_logger().info("job %s %s: %s", job_id, summary["status"], summary)
    if summary["status"] != "completed":  # a Failed run, so that automations can alert
        raise SyncIncompleteError(incomplete_message(summary), summary=summary)
    return summary


def _run_chunk(
    chunk_task: Task[..., dict[str, Any]], job_id: str, index: int, graph_url: str | None
) -> dict[str, Any]:
    """The chunk task's outcome; ``unfinished`` when it failed without its chunk row saying
    so (a lost lease, a database outage past every retry): the job stays resumable.

    The task is called for its result, not its state: a completed state's ``result()``
    is fetched through Prefect's event loop thread (a few ms a chunk); the engine hands
    back the value, or raises what the task raised once its retries are spent."""
    try:
        return chunk_task(job_id, index, graph_url)
    except Exception as exc:
        recorded = isinstance(exc, ChunkAttemptError)  # the row says failed (no retry left)
        message = f"{type(exc).__name__}: {exc}"
        get_run_logger().warning(
            "chunk %s %s: %s", index, "failed for good" if recorded else "left unfinished", message
        )
        status = "failed" if recorded else "unfinished"
        return {"chunk_index": index, "status": status, "error_message": message}
