"""Flow: sync every registered mailbox of a business that is due, one sync per mailbox.

claim the due mailboxes (registered, enabled, interval elapsed, no active job; their
next_due_at moved on in the same statement, so two sync-alls never pick one mailbox) →
start each one's sync → a table artifact: mailbox, started, status, messages, last success.

How a mailbox is synced depends on where this flow runs (as in flows/cleanup.py):
- inside a deployment (``sync-all/every-15m``), one flow run of the sync deployment per
  mailbox, ``run_deployment(..., timeout=0)`` with an idempotency key per mailbox and due
  time: the runs spread over every worker of the pool, on every machine, and this flow
  ends at once;
- elsewhere (``mailsync sync-all``), the syncs run here, each in a task, as many at
  a time as the flow's task runner has threads (``--parallel N``).
A failing mailbox is its own: its job's outcome is recorded on its store (migration
0007's trigger) and, after three failures in a row, its interval doubles per failure up
to a day; it shows as a problem mailbox (``mailsync mailbox list``, this table).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait

from mailsync import validate
from mailsync.artifacts import sync_all_key
from mailsync.flows.cleanup import inside_deployment
from mailsync.run_logs import forward_to_run_logs
from mailsync.runtime import get_runtime
from mailsync.store.rows import MailboxClaim, MailboxState
from mailsync.sync.jobs import default_business_id
from mailsync.tasks.sync_all import (
    claim_due_mailboxes,
    start_through_deployment,
    sync_in_process,
)

SYNC_DEPLOYMENT = "sync-mailbox/hourly"  # prefect.yaml's sync deployment
ARTIFACT_COLUMNS = ("mailbox", "started", "status", "messages", "last_success", "health")


@flow(name="sync-all", log_prints=False)
def sync_all(
    business_id: str | None = None,
    limit: int = 1000,
    sync_deployment: str = SYNC_DEPLOYMENT,
    chunk_size: int | None = None,
    page_size: int | None = None,
) -> dict[str, Any]:
    """Start (in a deployment) or run (elsewhere) the sync of each due mailbox of the
    business (default: the one of MAILSYNC_TENANT_ID). Returns each mailbox's outcome."""
    forward_to_run_logs()  # mailsync's warnings in this run's logs (its syncs run here too)
    runtime = get_runtime()
    business = str(
        validate.business_id(business_id or default_business_id(runtime.settings.tenant_id))
    )
    claims = claim_due_mailboxes(business, limit)
    overrides: dict[str, Any] = {"chunk_size": chunk_size, "page_size": page_size}
    if inside_deployment():
        outcomes = [start_through_deployment(c, sync_deployment, overrides) for c in claims]
    else:
        overrides["graph_url"] = runtime.settings.graph_url
        futures = [sync_in_process.submit(c, overrides) for c in claims]
        wait(futures)
        outcomes = [future.result() for future in futures]
    rows = _with_registry_state(business, claims, outcomes)
    _publish(business, rows)
    counts = dict(Counter(row["status"] for row in rows))
    get_run_logger().info("sync-all: %s mailboxes: %s", len(rows), counts)
    return {"business_id": business, "mailboxes": rows, "counts": counts}


def _with_registry_state(
    business: str, claims: list[MailboxClaim], outcomes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each outcome with what its store says now: last success, health."""
    states = {
        state.store_id: state
        for state in get_runtime().db.all_as(
            MailboxState,
            "registered_mailbox_states",
            business,
            business_id=business,
            store_ids=[str(c.store_id) for c in claims],
        )
    }
    rows = []
    for claim, outcome in zip(claims, outcomes, strict=True):
        state = states.get(claim.store_id)
        rows.append(
            {
                **outcome,
                "started": _iso(outcome.get("started")),
                "messages": outcome.get("messages"),
                "last_success": _iso(state.last_success_at if state else None),
                "health": state.health if state else None,
            }
        )
    return rows


def _iso(value: Any) -> Any:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def _publish(business: str, rows: list[dict[str, Any]]) -> None:
    """A version of the business's table artifact (``sync-all-<business id>``, one key
    however many runs): one row per mailbox this run started. Each mailbox's own sync adds
    a version to its own key (mailsync.artifacts)."""
    create_table_artifact(
        key=sync_all_key(business),
        table=[{column: row.get(column) for column in ARTIFACT_COLUMNS} for row in rows],
        description=f"sync-all of business {business}: {len(rows)} mailboxes due",
    )
