"""mailsync's own history in Prefect's database, kept to the windows of its own jobs.

Every sync leaves rows in Prefect's database: its flow run (in a deployment) or task runs
(in `mailsync sync-all`), their states, log lines, events, and a version of its mailbox's
artifact. Prefect keeps them all until told otherwise: its db_vacuum service deletes flow
runs only when ``flow_runs`` is enabled, after one period for every state (90 days by
default), and its events after PREFECT_SERVER_EVENTS_RETENTION_PERIOD (7 days).

Here the cleanup flow deletes the finished flow runs of mailsync's own flows with the ages
of the jobs in Postgres (the old system's): completed after 30 days, failed, crashed or
cancelled after 7. A flow run goes with its task runs and states (the database cascades),
its logs (the server queues their deletion), and here its artifact versions, which Prefect
keeps after their run is gone (the artifact table has no foreign key to the run). Other
flows' runs, and runs that have not ended, are never touched.

Runs go through ``POST /flow_runs/bulk_delete``: 50 at a time in one transaction on the
server (its limit), where ``DELETE /flow_runs/{id}`` costs a round trip each; a cycle of
10,000 mailboxes through a deployment ends 10,000 runs every 15 minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

# prefect.yaml's flows: the runs this cleanup may delete.
MAILSYNC_FLOWS = ("sync-mailbox", "sync-all", "cleanup", "chunk-report")
BULK_LIMIT = 50  # the server's cap on one bulk delete
ENDED_WELL = (StateType.COMPLETED,)
ENDED_BADLY = (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)


@dataclass(frozen=True)
class Pruned:
    flow_runs: int = 0
    artifacts: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.flow_runs + other.flow_runs, self.artifacts + other.artifacts)


def prune_history(
    client: SyncPrefectClient,
    now: datetime,
    completed_days: float,
    failed_days: float,
    flows: Sequence[str] = MAILSYNC_FLOWS,
) -> Pruned:
    """Delete the runs of ``flows`` that completed more than ``completed_days`` before
    ``now``, or ended otherwise more than ``failed_days`` before it, with their artifacts."""
    well = _prune(client, flows, ENDED_WELL, now - timedelta(days=completed_days))
    badly = _prune(client, flows, ENDED_BADLY, now - timedelta(days=failed_days))
    return well + badly


def _prune(
    client: SyncPrefectClient, flows: Sequence[str], states: Sequence[StateType], cutoff: datetime
) -> Pruned:
    """Batch after batch until one comes back short (a run that ends meanwhile is younger
    than the cutoff, so the loop ends)."""
    total = Pruned()
    while True:
        ids = [
            run.id
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=list(flows))),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states))),
                    end_time=FlowRunFilterEndTime.model_validate({"before_": cutoff}),
                ),
                limit=BULK_LIMIT,
            )
        ]
        if not ids:
            return total
        artifacts = _delete_artifacts(client, ids)  # first: a stop here leaves no orphan
        deleted = _bulk_delete(client, ids)
        total += Pruned(len(deleted), artifacts)
        if len(ids) < BULK_LIMIT:
            return total


def _delete_artifacts(client: SyncPrefectClient, flow_run_ids: list[UUID]) -> int:
    """Every artifact version the runs published (table versions, progress bars)."""
    runs = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
    deleted = 0
    while artifacts := client.read_artifacts(artifact_filter=runs, limit=200):
        for artifact in artifacts:
            client.delete_artifact(artifact.id)
        deleted += len(artifacts)
    return deleted


def _bulk_delete(client: SyncPrefectClient, flow_run_ids: list[UUID]) -> list[str]:
    """The runs deleted (the client has no method for this endpoint: its route, typed)."""
    body = {
        "flow_runs": FlowRunFilter.model_validate(
            {"id": {"any_": [str(run_id) for run_id in flow_run_ids]}}
        ).model_dump(mode="json"),
        "limit": BULK_LIMIT,
    }
    response = client.request("POST", cast(Any, "/flow_runs/bulk_delete"), json=body)
    response.raise_for_status()
    return [str(run_id) for run_id in response.json()["deleted"]]
