"""Flow: sync a mailbox (every folder, or one) into Postgres, chunk by chunk, in order.

open (or resume) the job → plan: list the folders; a folder read from scratch is its delta
round cut into chunks (sized by Graph's count), an incremental folder one delta chunk, a
sync window's folder window chunks → each chunk, in order, by the
sync-chunk task (its chunk row decides retries) → close the job (removals applied) → its
summary.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import Task, flow, get_run_logger

from mailsync.artifacts import ChunkProgress, publish_sync, sync_description
from mailsync.config import env_float
from mailsync.errors import (
    ChunkAttemptError,
    MailboxBusyError,
    MailsyncError,
    SyncIncompleteError,
)
from mailsync.run_logs import forward_to_run_logs
from mailsync.runtime import get_runtime
from mailsync.sync.jobs import (
    JobSummary,
    SkippedSync,
    begin_job,
    fail_job,
    finish_job,
    incomplete_message,
)
from mailsync.tasks.fetch_attachments import attachments_pending, fetch_job_attachments
from mailsync.tasks.plan import plan_here
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
    attachments: str | None = None,
    if_idle: bool = False,
) -> JobSummary | SkippedSync:
    """Sync ``mailbox``'s ``folder`` (``all``: every folder; or a well-known name or id), or
    resume ``job_id``: a folder's first sync lists it in full, later ones follow its delta
    (``full``: list every folder in full again). ``attachments``: content, metadata or none
    (default: MAILSYNC_ATTACHMENTS, content). Returns the job's summary.

    ``if_idle`` (a change notification's sync, flows/sync_changed.py): when a job of the
    mailbox is active, end at once, Completed, with ``{"status": "skipped"}``: the change
    is synced after that job, so two never run at once and nothing is missed."""
    forward_to_run_logs()  # mailsync's warnings (a delta reset…) in this run's logs too
    runtime = get_runtime()
    runtime.graph_url(graph_url)  # another Graph host is refused before anything is written
    try:
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
            if_idle=if_idle,
        )
    except MailboxBusyError as exc:
        get_run_logger().info("skipped: %s", exc)
        return {"status": "skipped", "mailbox": mailbox, "reason": str(exc)}
    job_id = str(job.id)
    logger = get_run_logger()
    # A new job says what it is when it ends (one line when nothing changed); a resumed one
    # now, since it carries on from an earlier run.
    logger.log(logging.INFO if resumed else logging.DEBUG, "%s job %s", _verb(resumed), job_id)
    try:
        plan = plan_here(job_id, graph_url)  # the plan-chunks task only to retry it
    except MailsyncError as exc:  # nothing can be synced without a plan
        fail_job(runtime.db, job, str(exc), exc.category)
        raise
    chunk_task = sync_chunk.with_options(retries=plan.max_attempts)
    watch_after_s = env_float("MAILSYNC_PROGRESS_AFTER_S", ChunkProgress.WATCH_AFTER_S)
    progress = ChunkProgress(job_id, plan.total_chunks, watch_after_s)
    for index in range(1, plan.total_chunks + 1):
        outcome = _run_chunk(chunk_task, job_id, index, graph_url)
        progress.add(outcome)
        if outcome["status"] == "unfinished":  # later chunks start where this one stops
            break
    else:  # the pages are in: their attachments, before the job closes (a resume redoes it)
        if attachments_pending(job, attachments):  # else no task run: nothing to fetch
            fetch_job_attachments(job_id, graph_url, attachments)
    summary = finish_job(runtime.db, job)
    progress.close()
    publish_sync(summary)
    logger.info("%s", sync_description(summary))
    logger.debug("job %s: %s", job_id, summary)
    if summary["status"] != "completed":  # a Failed run, so that automations can alert
        raise SyncIncompleteError(incomplete_message(summary), summary=summary)
    return summary


def _verb(resumed: bool) -> str:
    return "resuming" if resumed else "starting"


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
