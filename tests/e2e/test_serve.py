"""`python -m mailsync.deployments.serve` for real: every deployment of prefect.yaml registered
on the session's Prefect server with no work pool, a flow run of one of them executed by the
serving process, and the deployments paused when it stops."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import DeploymentResponse
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from tests.e2e.helpers import Processes, child_env, wait_for

pytestmark = pytest.mark.e2e

DEPLOYMENTS = (
    "sync-mailbox/hourly",
    "cleanup/every-6h",
    "cleanup/recover-stuck",
    "chunk-report/daily",
)


def served_deployments() -> dict[str, DeploymentResponse] | None:
    """The four deployments, once all are registered by the serving process (no pool: a
    deployment left by `prefect deploy` in another test has one until serve replaces it)."""
    with get_client(sync_client=True) as client:
        try:
            found = {name: client.read_deployment_by_name(name) for name in DEPLOYMENTS}
        except ObjectNotFound:
            return None
    return found if all(d.work_pool_name is None for d in found.values()) else None


def test_serve_registers_runs_and_on_stop_pauses_the_deployments(
    database_url: str, processes: Processes
) -> None:
    serving = processes.start(
        "serve", [sys.executable, "-m", "mailsync.deployments.serve", "--limit", "2"], child_env()
    )
    deployments = wait_for("the served deployments", served_deployments, timeout_s=90)
    assert not any(d.paused for d in deployments.values())
    [six_hourly] = deployments["cleanup/every-6h"].schedules
    assert six_hourly.schedule.cron == "0 */6 * * *"
    assert deployments["cleanup/every-6h"].entrypoint == "mailsync.flows.cleanup.cleanup"

    run = run_deployment("chunk-report/daily", parameters={"since": "1h"}, timeout=0)

    def finished() -> Any:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        return state if state and state.is_final() else None

    state = wait_for("the report's flow run", finished, timeout_s=120, every_s=0.5)
    assert state.is_completed(), f"{state}\n{processes.log('serve')[-4000:]}"

    processes.stop(serving)  # SIGTERM: Prefect's runner shuts down and pauses its deployments
    assert serving.returncode is not None
    with get_client(sync_client=True) as client:
        paused = {name: client.read_deployment_by_name(name).paused for name in DEPLOYMENTS}
    assert all(paused.values()), f"{paused}\n{processes.log('serve')[-4000:]}"
