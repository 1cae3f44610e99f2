"""Steps of sync-all: claim the due mailboxes, then start each one's sync.

A claim is one statement (``claim_due_mailboxes``, sql/registry.sql) that also moves each
mailbox's next_due_at on: it is not retried, since a retry after a claim that committed
would only find nothing due. A start that fails gives its claim back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from mailsync.config import env_int
from mailsync.errors import ConfigError, SyncIncompleteError
from mailsync.runtime import get_runtime
from mailsync.store.rows import ChangedMailbox, MailboxClaim
from mailsync.sync.jobs import JobSummary, SkippedSync

NAMES_LOGGED = 5


@task(name="claim-due-mailboxes", cache_policy=NO_CACHE)
def subscribed_interval_minutes() -> int:
    """How often sync-all polls a mailbox whose change notifications are live (at least):
    MAILSYNC_SUBSCRIBED_POLL_MINUTES, default an hour. Notifications keep it current; the
    poll catches what Graph failed to announce (counted in stores.missed_changes)."""
    minutes = env_int("MAILSYNC_SUBSCRIBED_POLL_MINUTES", 60)
    if not 1 <= minutes <= 10080:  # the registry's own interval bounds (migration 0007)
        raise ConfigError(f"MAILSYNC_SUBSCRIBED_POLL_MINUTES must be 1..10080, not {minutes}")
    return minutes


def claim_due_mailboxes(business_id: str, limit: int) -> list[MailboxClaim]:
    """Up to ``limit`` due mailboxes of the business, claimed (next_due_at moved on)."""
    claims = get_runtime().db.all_as(
        MailboxClaim,
        "claim_due_mailboxes",
        business_id,
        business_id=business_id,
        limit=limit,
        subscribed_interval_minutes=subscribed_interval_minutes(),
    )
    names = [c.mailbox for c in claims]
    # A few names, not all: at 10,000 mailboxes the whole list was one line of 300 kB.
    shown = ", ".join(names[:NAMES_LOGGED]) + (", …" if len(names) > NAMES_LOGGED else "")
    get_run_logger().info("%s mailboxes due%s", len(claims), f": {shown}" if names else "")
    return claims


def idempotency_key(claim: MailboxClaim) -> str:
    """One flow run per mailbox and turn: a sync-all run that is retried, or a second one
    racing it, asks Prefect for the same run again and gets the first one back."""
    return f"sync-all:{claim.business_id}:{claim.store_id}:{claim.due_at.isoformat()}"


def sync_parameters(
    claim: MailboxClaim | ChangedMailbox, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The sync-mailbox flow's parameters for a claimed mailbox (JSON: a deployment's)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return {
        "mailbox": claim.mailbox,
        "folder": claim.folder,
        "business_id": str(claim.business_id),
        **given,
    }


def start_through_deployment(
    claim: MailboxClaim, deployment: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """A flow run of the sync deployment for the mailbox, not waited for (timeout=0): any
    worker of the pool, on any machine, takes it. Called from the flow itself, not from a
    task: ``run_deployment`` called in a task's thread never returned here."""
    started = datetime.now(UTC)
    try:
        run = cast(
            FlowRun,
            run_deployment(  # called from sync code: a FlowRun
                deployment,
                parameters=sync_parameters(claim, overrides),
                timeout=0,
                idempotency_key=idempotency_key(claim),
                flow_run_name=f"sync {claim.mailbox}",
            ),
        )
    except Exception as exc:  # unknown deployment, API down: due again at once
        release_claim(claim)
        get_run_logger().error("could not start %s through %s: %s", claim.mailbox, deployment, exc)
        return {
            "mailbox": claim.mailbox,
            "started": started,
            "status": "not started",
            "error": str(exc)[:300],
        }
    state = (run.state.name if run.state else None) or "Scheduled"
    return {
        "mailbox": claim.mailbox,
        "started": started,
        "status": state.lower(),
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
    }


@task(name="sync-mailbox-here", task_run_name="sync-{claim.mailbox}", cache_policy=NO_CACHE)
def sync_in_process(
    claim: MailboxClaim | ChangedMailbox, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The mailbox's sync in this process; its outcome, never an exception: one mailbox's
    failure is its own.

    The sync runs as this task's body (its chunk tasks nested here), not as a subflow: a
    subflow run is created by a blocking call to the Prefect API, and N of them at once
    queue behind each other on the server (a SQLite server took 2-6 s each with 4-8 at
    once, while the first mailbox was already syncing). Task runs are reported by events and
    never wait. Each mailbox's runs still show under this task run, with its artifacts."""
    from mailsync.flows.sync_mailbox import sync_mailbox  # the sync's imports, when it runs

    started = datetime.now(UTC)
    outcome: dict[str, Any] = {"mailbox": claim.mailbox, "started": started}
    try:
        summary = sync_mailbox.fn(**sync_parameters(claim, overrides))
    except SyncIncompleteError as exc:
        return {**_outcome(exc.summary), **outcome, "error": str(exc)[:300]}
    except Exception as exc:  # whatever stopped it (a bad mailbox, an outage): its own
        get_run_logger().error("sync of %s failed: %s", claim.mailbox, exc)
        return {
            **outcome,
            "status": "failed",
            "job_id": None,
            "messages": None,
            "error": str(exc)[:300],
        }
    return {**_outcome(summary), **outcome}


def _outcome(summary: JobSummary | SkippedSync) -> dict[str, Any]:
    return {
        "status": summary["status"],
        "job_id": summary.get("job_id"),
        "messages": summary.get("emails_processed"),
    }


def release_claim(claim: MailboxClaim) -> None:
    get_runtime().db.one(
        "release_mailbox_claim",
        claim.business_id,
        store_id=claim.store_id,
        business_id=claim.business_id,
        due_at=claim.due_at,
    )
