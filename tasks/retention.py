"""Task: delete what the old system let grow without bound, in bounded batches.

What goes, and when (the old system's ages; each one an env setting and a flow parameter):
- completed jobs after 30 days, failed and partially failed ones after 7, with their chunks;
- the checkpoints of finished jobs after a 1-day grace: a finished job never resumes, so
  its positions only serve someone looking into it soon after;
- attachment rows older than 24 hours whose message is gone from ``emails``, then the
  attachment contents (``attachment_blobs``) no attachment references, 24 hours after
  their last reference (race-safe against a sync storing the same content: cleanup.sql);
- in Prefect's own database (``prune_prefect_history``, mailsync.prefect_history),
  mailsync's flow runs and their artifact versions, at the jobs' ages.
Stores and emails are never deleted. Each statement deletes at most ``batch_size`` rows in
a transaction of its own, so locks stay short and a stopped cleanup keeps what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from mailsync.config import env_float, env_int
from mailsync.prefect_history import MAILSYNC_FLOWS, prune_history
from mailsync.runtime import get_runtime
from mailsync.store.db import Database
from mailsync.tasks.retry import MAINTENANCE_RETRIES

DAY_S = 86_400.0
HOUR_S = 3_600.0


@dataclass(frozen=True)
class RetentionPolicy:
    completed_jobs_days: float = 30.0
    failed_jobs_days: float = 7.0
    checkpoint_grace_hours: float = 24.0
    orphan_attachments_hours: float = 24.0
    batch_size: int = 5_000

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        """The defaults, overridden by MAILSYNC_RETAIN_* / MAILSYNC_CLEANUP_BATCH_SIZE."""
        d = cls()
        return cls(
            completed_jobs_days=env_float("MAILSYNC_RETAIN_COMPLETED_DAYS", d.completed_jobs_days),
            failed_jobs_days=env_float("MAILSYNC_RETAIN_FAILED_DAYS", d.failed_jobs_days),
            checkpoint_grace_hours=env_float(
                "MAILSYNC_RETAIN_CHECKPOINTS_HOURS", d.checkpoint_grace_hours
            ),
            orphan_attachments_hours=env_float(
                "MAILSYNC_RETAIN_ORPHAN_ATTACHMENTS_HOURS", d.orphan_attachments_hours
            ),
            batch_size=env_int("MAILSYNC_CLEANUP_BATCH_SIZE", d.batch_size),
        )

    def with_overrides(self, **changes: float | int | None) -> RetentionPolicy:
        """This policy with the given (non-None) fields replaced; flow parameters use it."""
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        policy = replace(self, **given)
        if policy.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {policy.batch_size}")
        return policy

    def as_params(self) -> dict[str, float | int]:
        """The ages in seconds, as the statements of sql/cleanup.sql take them."""
        return {
            "completed_after_s": self.completed_jobs_days * DAY_S,
            "failed_after_s": self.failed_jobs_days * DAY_S,
            "grace_s": self.checkpoint_grace_hours * HOUR_S,
            "older_than_s": self.orphan_attachments_hours * HOUR_S,
            "batch_size": self.batch_size,
        }


def _delete_batches(db: Database, query: str, params: dict[str, Any]) -> dict[str, int]:
    """Run one bounded delete until a batch comes back short; the summed counts."""
    totals: dict[str, int] = {}
    while True:
        with db.maintenance_transaction() as session:
            row = session.one(query, **params)
        assert row is not None
        for key, value in row.items():
            totals[key] = totals.get(key, 0) + int(value or 0)
        if int(row["deleted"]) < params["batch_size"]:
            return totals


def _delete_orphan_attachments(db: Database, params: dict[str, Any]) -> int:
    """Walk the attachments by id, one batch a transaction, deleting the orphans."""
    deleted, after_id = 0, 0
    while True:
        with db.maintenance_transaction() as session:
            row = session.one("delete_orphan_attachments", after_id=after_id, **params)
        assert row is not None
        deleted += int(row["deleted"])
        if row["last_id"] is None:
            return deleted
        after_id = int(row["last_id"])


def delete_expired(db: Database, policy: RetentionPolicy) -> dict[str, int]:
    """Apply the policy: checkpoints first, then chunks, then jobs, then orphan attachments.

    Checkpoints and chunks go before their jobs so that deleting a job cascades into
    (nearly) nothing: every statement stays bounded by the batch size.
    """
    params = policy.as_params()
    checkpoints = _delete_batches(db, "delete_finished_checkpoints", params)
    chunks = _delete_batches(db, "delete_expired_chunks", params)
    jobs = _delete_batches(db, "delete_expired_jobs", params)
    return {
        "jobs_deleted": jobs["deleted"],
        "chunks_deleted": chunks["deleted"] + jobs["chunks"],
        "checkpoints_deleted": (
            checkpoints["deleted"] + chunks["checkpoints"] + jobs["checkpoints"]
        ),
        "attachments_deleted": _delete_orphan_attachments(db, params),
        # After the rows above: a blob their deletion orphaned waits out its grace too.
        "blobs_deleted": _delete_batches(db, "delete_orphan_blobs", params)["deleted"],
    }


@task(name="apply-retention", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def apply_retention(policy: RetentionPolicy) -> dict[str, int]:
    """Delete the rows past their age (see the module docstring); the counts deleted."""
    deleted = delete_expired(get_runtime().db, policy)
    get_run_logger().info("retention (%s): %s", policy, deleted)
    return deleted


@task(name="prune-prefect-history", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def prune_prefect_history(
    policy: RetentionPolicy, now: datetime | None = None, flows: Sequence[str] = MAILSYNC_FLOWS
) -> dict[str, int]:
    """Delete mailsync's flow runs from Prefect's database, with their artifact versions,
    at the jobs' ages (mailsync.prefect_history); the counts deleted. ``now``: the clock
    the ages are counted from (a test ages runs by moving it on, Prefect's end times being
    the server's own)."""
    with get_client(sync_client=True) as client:
        pruned = prune_history(
            client,
            now or datetime.now(UTC),
            completed_days=policy.completed_jobs_days,
            failed_days=policy.failed_jobs_days,
            flows=flows,
        )
    deleted = {"prefect_runs_deleted": pruned.flow_runs, "artifacts_deleted": pruned.artifacts}
    get_run_logger().info("Prefect history: %s", deleted)
    return deleted
