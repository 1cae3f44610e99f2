"""Steps of sync-changed: which mailboxes of a business changed (a question to Postgres),
and the queued runs its answer made redundant.

Neither is a Prefect task: the flow asks about every second while it runs (a task run each
time would be hundreds of runs of nothing). The question is one read-only statement
(``changed_mailboxes``, sql/notifications.sql); two runs asking at once may both see a
mailbox, and the job's one-active-job-per-mailbox rule lets only one of them sync it (the
other is ``skipped``).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from mailsync.runtime import get_runtime
from mailsync.store.rows import ChangedMailbox


def changed_mailboxes(business_id: str, limit: int, debounce_s: float) -> list[ChangedMailbox]:
    """Up to ``limit`` mailboxes with a change no job started after, oldest change first;
    ``ready``: its first notification is ``debounce_s`` old (the rest of its burst is in)."""
    return get_runtime().db.all_as(
        ChangedMailbox,
        "changed_mailboxes",
        business_id,
        business_id=business_id,
        limit=limit,
        debounce_s=debounce_s,
    )


def cancel_queued_runs(deployment_id: UUID, own_run_id: UUID | None, before: datetime) -> int:
    """Cancel the deployment's runs that wait for their turn (scheduled, or
    AwaitingConcurrencySlot) and were created before ``before``; how many.

    Safe when ``before`` precedes a question to Postgres that found nothing to take or wait
    for: such a run came from events sent before it, and an event is sent after its
    notifications are in Postgres (the relay), so that question saw them. Without this,
    every event window of a long run queued one more run, each a process start that finds
    nothing; under a steady stream of notifications they piled up faster than they ran."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    waiting = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
    )
    cancelled = 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=waiting,
        )
        for run in runs:
            if run.id == own_run_id or run.created is None or run.created >= before:
                continue
            message = "its changes were taken by an earlier run (sync-changed)"
            client.set_flow_run_state(run.id, Cancelled(message=message))
            cancelled += 1
    return cancelled
