"""Flow: recover stuck chunks, finish or resume their jobs, delete what is past retention.

take the cleanup lock (or say another cleanup runs, and stop) → put stuck chunks back →
close jobs whose chunks all finished → pick the jobs nobody works on → retention → release
the lock → resume the picked jobs → mailsync's old runs and artifacts out of Prefect's
database (retention) → log and publish the counts.

How a job is resumed depends on where this flow runs:
- inside a deployment (a worker started it), each job gets a flow run of the sync
  deployment (``run_deployment("sync-mailbox/hourly", parameters={"job_id": …},
  timeout=0)``): the cleanup returns at once, the resumed syncs run on whichever worker is
  free, in parallel, with the pool's environment;
- elsewhere (``mailsync cleanup``, tests), there is no worker to hand the job to, so the
  sync runs here, in this process, one job after the other (a subflow of this run).
Jobs with no chunk left to run are not resumed but closed here (``finish_sync_job``).
Resuming happens after the lock is released: a long in-process sync must not make the next
cleanups skip their recovery; the jobs are marked "resume requested" under the lock instead.
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run

from mailsync.run_logs import forward_to_run_logs
from mailsync.runtime import get_runtime
from mailsync.store.maintenance import cleanup_lock
from mailsync.store.rows import ClosedJob
from mailsync.tasks.recover import claim_jobs_to_resume, close_finished_jobs, reset_stuck_chunks
from mailsync.tasks.retention import RetentionPolicy, apply_retention, prune_prefect_history

SYNC_DEPLOYMENT = "sync-mailbox/hourly"  # prefect.yaml's sync deployment
SKIPPED = "another cleanup is running"
COUNTS = (
    "stuck_reset",
    "stuck_failed",
    "jobs_closed",
    "jobs_resumed",
    "jobs_resume_failed",
    "jobs_deleted",
    "chunks_deleted",
    "checkpoints_deleted",
    "attachments_deleted",
    "blobs_deleted",
    "prefect_runs_deleted",
    "artifacts_deleted",
)


@flow(name="cleanup", log_prints=False)
def cleanup(
    stuck_after_s: float | None = None,
    retention: bool = True,
    resume: bool = True,
    completed_jobs_days: float | None = None,
    failed_jobs_days: float | None = None,
    checkpoint_grace_hours: float | None = None,
    orphan_attachments_hours: float | None = None,
    batch_size: int | None = None,
    sync_deployment: str = SYNC_DEPLOYMENT,
) -> dict[str, Any]:
    """Recover stuck chunks and their jobs and, with ``retention``, delete old rows.

    Unset thresholds come from the settings (MAILSYNC_STUCK_AFTER_S, MAILSYNC_RETAIN_*).
    Returns the counts; ``{"skipped": …}`` (and zero counts) when another cleanup holds
    the lock. ``resume=False`` leaves the jobs to the next sync of their mailbox.
    """
    forward_to_run_logs()  # mailsync's warnings in this run's logs
    runtime = get_runtime()
    logger = get_run_logger()
    stuck_after = stuck_after_s or runtime.settings.stuck_after_s
    policy = RetentionPolicy.from_env().with_overrides(
        completed_jobs_days=completed_jobs_days,
        failed_jobs_days=failed_jobs_days,
        checkpoint_grace_hours=checkpoint_grace_hours,
        orphan_attachments_hours=orphan_attachments_hours,
        batch_size=batch_size,
    )
    result: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    with cleanup_lock(runtime.db) as held:
        if not held:
            logger.info("%s: this one stops here", SKIPPED)
            return {"skipped": SKIPPED, **result}
        recovered = reset_stuck_chunks(stuck_after)
        closed = close_finished_jobs()
        to_resume = (
            claim_jobs_to_resume(recovered.job_ids, stuck_after, _requested_by()) if resume else []
        )
        if retention:
            result.update(apply_retention(policy))
    started, failed = resume_jobs([str(job.job_id) for job in to_resume], sync_deployment)
    if retention:  # Prefect's database, not ours: outside the lock, after the resumes
        result.update(prune_prefect_history(policy))
    result.update(
        stuck_reset=recovered.stuck_reset,
        stuck_failed=recovered.stuck_failed,
        jobs_closed=len(closed),
        jobs_resumed=len(started),
        jobs_resume_failed=len(failed),
    )
    logger.info("cleanup: %s", result)
    if retention or any(result.values()):  # frequent recovery-only runs publish news only
        _publish(result, stuck_after, policy if retention else None, closed, started, failed)
    return result


def _requested_by() -> str:
    return f"cleanup flow run {flow_run.get_id() or 'unknown'}"


def inside_deployment() -> bool:
    """Whether a worker runs this flow run for a deployment (else: CLI, tests, scripts)."""
    return deployment.get_id() is not None


def resume_jobs(job_ids: list[str], sync_deployment: str) -> tuple[list[str], list[str]]:
    """Start a sync for each job; the ids started and those that could not be."""
    if not job_ids:
        return [], []
    if inside_deployment():
        return _resume_through_deployment(job_ids, sync_deployment)
    return _resume_in_process(job_ids)


def _resume_through_deployment(
    job_ids: list[str], sync_deployment: str
) -> tuple[list[str], list[str]]:
    """One flow run of the sync deployment per job, not waited for (timeout=0)."""
    logger = get_run_logger()
    started, failed = [], []
    for job_id in job_ids:
        try:
            run = cast(  # called from sync code: a FlowRun, not a coroutine
                FlowRun, run_deployment(sync_deployment, parameters={"job_id": job_id}, timeout=0)
            )
        except Exception as exc:  # unknown deployment, API down: the next cleanup tries again
            logger.error("could not resume job %s through %s: %s", job_id, sync_deployment, exc)
            failed.append(job_id)
            continue
        logger.info("job %s resumed by flow run %s of %s", job_id, run.id, sync_deployment)
        started.append(job_id)
    return started, failed


def _resume_in_process(job_ids: list[str]) -> tuple[list[str], list[str]]:
    """Run the sync of each job here, one after the other, as subflows."""
    from mailsync.flows.sync_mailbox import sync_mailbox  # the sync's imports only when needed

    logger = get_run_logger()
    started, failed = [], []
    for job_id in job_ids:
        logger.info("resuming job %s in this process", job_id)
        state = sync_mailbox(job_id=job_id, return_state=True)
        if state.is_completed():
            started.append(job_id)
        else:
            logger.error("resumed sync of job %s ended %s: %s", job_id, state.name, state.message)
            failed.append(job_id)
    return started, failed


def _publish(
    result: dict[str, Any],
    stuck_after_s: float,
    policy: RetentionPolicy | None,
    closed: list[ClosedJob],
    started: list[str],
    failed: list[str],
) -> None:
    """The counts as a markdown artifact (key ``cleanup``: one version per run)."""
    lines = ["# Cleanup", "", "| what | rows |", "| --- | ---: |"]
    lines += [f"| {name} | {result[name]} |" for name in COUNTS]
    lines += ["", f"Stuck after {stuck_after_s:g} s without a heartbeat."]
    if policy is not None:
        lines.append(
            f"Retention: completed jobs {policy.completed_jobs_days:g} d, failed jobs "
            f"{policy.failed_jobs_days:g} d, checkpoints {policy.checkpoint_grace_hours:g} h "
            f"after the job, orphan attachments {policy.orphan_attachments_hours:g} h; "
            f"batches of {policy.batch_size}."
        )
    lines += [f"- closed job `{job.job_id}`: {job.status}" for job in closed]
    lines += [f"- resumed job `{job_id}`" for job_id in started]
    lines += [f"- could not resume job `{job_id}`" for job_id in failed]
    create_markdown_artifact(
        markdown="\n".join(lines), key="cleanup", description="What the cleanup did"
    )
