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

# prefect.yaml's deployment names and work pool are the Prefect server's, shared: the
# modules that deploy, serve or run them take turns (a lock: tests/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("prefect-yaml")]

DEPLOYMENTS = (
    "sync-mailbox/hourly",
    "cleanup/every-6h",
    "cleanup/recover-stuck",
    "chunk-report/daily",
)


def served_deployments() -> dict[str, DeploymentResponse] | None:
    """The four deployments, once the serving process has registered all of them: their
    entrypoints are modules (`prefect deploy`, in another test, registers files)."""
    with get_client(sync_client=True) as client:
        try:
            found = {name: client.read_deployment_by_name(name) for name in DEPLOYMENTS}
        except ObjectNotFound:
            return None
    served = all(":" not in (d.entrypoint or ":") for d in found.values())
    return found if served else None


def test_serve_registers_runs_and_on_stop_pauses_the_deployments(
    database_url: str, processes: Processes
) -> None:
    serving = processes.start(
        "serve", [sys.executable, "-m", "mailsync.deployments.serve", "--limit", "2"], child_env()
    )

    def registered() -> dict[str, DeploymentResponse] | None:
        if serving.poll() is not None:
            raise AssertionError(f"serve exited {serving.returncode}\n{processes.log('serve')}")
        return served_deployments()

    deployments = wait_for("the served deployments", registered, timeout_s=90)
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
