"""Tasks: put stuck chunks back, close jobs whose chunks all finished, pick jobs to resume.

A chunk is stuck when its worker stopped renewing the heartbeat for ``stuck_after_s``
(default 30 s: three missed 10 s heartbeats). Recovery only changes rows; resuming the jobs
is the flow's business (flows/cleanup.py), because how depends on where the flow runs.
"""

from __future__ import annotations

from typing import NamedTuple

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.runtime import get_runtime
from mailsync.store.rows import ClosedJob, IdleJob, StuckChunk
from mailsync.tasks.retry import MAINTENANCE_RETRIES

# A resumed run that has not started after this long (no worker free, worker down) is
# requested again; before that, a second request would only queue a duplicate run.
RESUME_GRACE_S = 600.0


class Recovered(NamedTuple):
    stuck_reset: int  # chunks put back (pending)
    stuck_failed: int  # chunks out of attempts (failed, 'stuck')
    job_ids: list[str]  # the jobs whose chunks were touched


@task(name="reset-stuck-chunks", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def reset_stuck_chunks(stuck_after_s: float) -> Recovered:
    """Stuck chunks back to pending, or failed ('stuck') when out of attempts."""
    with get_runtime().db.maintenance_transaction() as session:
        rows = session.all_as(StuckChunk, "cleanup_stuck_chunks", stuck_after_s=stuck_after_s)
    reset = [r for r in rows if r.new_status == "pending"]
    failed = [r for r in rows if r.new_status == "failed"]
    if rows:
        get_run_logger().warning(
            "stuck chunks (no heartbeat for %ss): %s put back, %s failed for good",
            stuck_after_s,
            len(reset),
            len(failed),
        )
    return Recovered(len(reset), len(failed), sorted({str(r.parent_sync_job_id) for r in rows}))


@task(name="close-finished-jobs", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def close_finished_jobs() -> list[ClosedJob]:
    """Close the open jobs whose chunks have all finished; their ids and new statuses."""
    with get_runtime().db.maintenance_transaction() as session:
        closed = session.all_as(ClosedJob, "close_finished_jobs")
    for job in closed:
        get_run_logger().info("closed job %s: %s", job.job_id, job.status)
    return closed


@task(name="claim-jobs-to-resume", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def claim_jobs_to_resume(
    recovered_job_ids: list[str], idle_after_s: float, requested_by: str
) -> list[IdleJob]:
    """The open jobs nobody works on, each marked as 'resume requested' by this cleanup.

    Found and marked in one transaction, under the cleanup lock: a concurrent cleanup that
    runs after ours sees the mark and leaves these jobs alone.
    """
    with get_runtime().db.maintenance_transaction() as session:
        rows = session.all_as(
            IdleJob,
            "jobs_to_resume",
            recovered_job_ids=recovered_job_ids,
            idle_after_s=idle_after_s,
            resume_grace_s=max(RESUME_GRACE_S, idle_after_s),
        )
        for row in rows:
            session.execute("mark_resume_requested", job_id=row.job_id, requested_by=requested_by)
    return rows
