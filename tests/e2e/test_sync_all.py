"""sync-all for real: the two deployments of prefect.yaml on a process work pool, two
`prefect worker start` processes, one sync-all run over four registered mailboxes.

Every mailbox is synced exactly once, by runs spread over both workers; the simulator's
counters say no mailbox ever had more than four requests in flight or went over its
request budget; and a mailbox whose Graph answers a storm of 429s (another one: 500s)
holds up nobody else: only its own limit was paused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from mailsync.simulator import GraphSimulator
from mailsync.store.db import Database
from mailsync.sync.registry import Registration, add_mailbox
from tests.e2e.helpers import BIN_DIR, Processes, child_env, query, run_cli, wait_for

# prefect.yaml's deployment names and work pool are the Prefect server's, shared: the
# modules that deploy, serve or run them take turns (a lock: tests/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("prefect-yaml")]

POOL = "mailsync-local"  # prefect.yaml's pool
WORKERS = ("fanout-1", "fanout-2")
BUSINESS = "00000000-0000-4000-8000-00000000f00d"
# Four mailboxes; each worker holds two flow runs at a time (the sync-all run is one), so
# the runs spread over both. Each flow run is a Python process: most of this module's cost.
MAILBOXES = [f"box{i}@contoso.example" for i in range(4)]
STORMY, FLAKY = MAILBOXES[0], MAILBOXES[1]
RETRY_AFTER_S = 1.0
STORM = 3  # 429s in a row, each asking the mailbox's limit to pause


@pytest.fixture(scope="module")
def deployments() -> dict[str, uuid.UUID]:
    """sync-mailbox/hourly and sync-all/every-15m on the pool, sync-all's schedule paused."""
    prefect = str(BIN_DIR / "prefect")
    run_cli([prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"], child_env())
    run_cli(
        [prefect, "--no-prompt", "deploy", "--name", "hourly", "--name", "every-15m"],
        child_env(),
        timeout_s=180,
    )
    ids = {}
    with get_client(sync_client=True) as client:
        for name in ("sync-mailbox/hourly", "sync-all/every-15m"):
            deployment = client.read_deployment_by_name(name)
            client.pause_deployment(deployment.id)
            ids[name] = deployment.id
    return ids


@pytest.fixture()
def tenant(
    pg_admin_url: str, template_db: str, processes: Processes
) -> Iterator[tuple[str, GraphSimulator]]:
    """A fresh database with the four mailboxes registered, the simulator serving them
    (with Graph's limits, scaled to the test: 120 requests per 10 s), and two workers."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"mailsync_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = make_conninfo(**{**conninfo_to_dict(pg_admin_url), "dbname": name})
    with GraphSimulator() as simulator, Database(url) as db:
        simulator.faults.latency_ms = 20
        simulator.faults.mailbox_budget_requests = 120
        simulator.faults.mailbox_budget_window_s = 10.0
        for i, mailbox in enumerate(MAILBOXES):
            simulator.add_mailbox(mailbox, 200, seed=200 + i)
            add_mailbox(db, Registration.checked(BUSINESS, mailbox, "all"))
        simulator.limits.storm(STORMY, 429, STORM, RETRY_AFTER_S)
        simulator.limits.storm(FLAKY, 500, 3)
        env = child_env(
            MAILSYNC_DATABASE_URL=url,
            MAILSYNC_GRAPH_URL=simulator.url,
            MAILSYNC_TENANT_ID="contoso-e2e",
            MAILSYNC_CLIENT_ID=simulator.client_id,
            MAILSYNC_CLIENT_SECRET=simulator.client_secret,
            MAILSYNC_GRAPH_MAILBOX_REQUESTS="120",
            MAILSYNC_GRAPH_MAILBOX_WINDOW_S="10",
            PREFECT_WORKER_QUERY_SECONDS="1",
        )
        for worker in WORKERS:
            processes.start(
                worker,
                [
                    str(BIN_DIR / "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    POOL,
                    "--name",
                    worker,
                    "--limit",
                    "2",
                ],
                env,
            )
        yield url, simulator


def runs_of(deployment_id: uuid.UUID) -> list[FlowRun]:
    """The deployment's runs for this test's business (other modules deploy the same names)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return [r for r in runs if r.parameters.get("business_id") == BUSINESS]


def test_one_sync_all_run_syncs_every_mailbox_once_over_both_workers_within_the_limits(
    deployments: dict[str, uuid.UUID], tenant: tuple[str, GraphSimulator], processes: Processes
) -> None:
    url, simulator = tenant
    run_deployment(
        "sync-all/every-15m", timeout=0, parameters={"business_id": BUSINESS, "page_size": 50}
    )

    def all_finished() -> list[FlowRun] | None:
        runs = runs_of(deployments["sync-mailbox/hourly"])
        done = [r for r in runs if r.state and r.state.is_final()]
        return done if len(done) >= len(MAILBOXES) else None

    try:
        # Generous: under load, Prefect's SQLite server answers run creations "database is
        # locked" and its client waits ~2 s before each retry.
        finished = wait_for("four synced mailboxes", all_finished, 240, every_s=0.5)
    except AssertionError:
        states = [(r.name, r.state) for r in runs_of(deployments["sync-all/every-15m"])]
        logs = "\n".join(processes.log(w)[-3000:] for w in WORKERS)
        stores = query(
            url, "SELECT mailbox, next_due_at, last_claimed_at, last_status, last_error FROM stores"
        )
        raise AssertionError(f"sync-all runs: {states}\n{stores}\n{logs}") from None

    # Exactly once each, all completed, by runs that both workers took.
    assert sorted(r.parameters["mailbox"] for r in finished) == sorted(MAILBOXES)
    assert all(r.state and r.state.is_completed() for r in finished), [
        (r.parameters["mailbox"], r.state) for r in finished
    ]
    assert {r.labels.get("prefect.worker.name") for r in finished} == set(WORKERS)
    jobs = {
        j["mailbox"]: j
        for j in query(
            url,
            "SELECT s.mailbox, q.status, q.started_at, q.completed_at, s.last_success_at"
            "  FROM sync_queue q JOIN stores s ON s.id = q.store_id",
        )
    }
    assert sorted(jobs) == sorted(MAILBOXES)
    assert {j["status"] for j in jobs.values()} == {"completed"}
    assert all(j["last_success_at"] == j["completed_at"] for j in jobs.values())
    for mailbox in MAILBOXES:
        stored = query(
            url,
            "SELECT count(DISTINCT e.graph_id) AS n FROM emails e"
            " JOIN stores s ON s.id = e.store_id WHERE s.mailbox = %s",
            mailbox,
        )
        assert stored[0]["n"] == len(simulator.mailbox(mailbox).ids()), mailbox

    # Graph's limits, as the simulator counted them: never more than four in flight, never
    # over the budget; the 429s and 500s were the storms' alone.
    usage = simulator.limits.as_dict()
    assert usage["totals"]["peak_in_flight"] <= 4
    assert usage["totals"]["over_concurrency"] == usage["totals"]["over_budget"] == 0
    assert usage["mailboxes"][STORMY]["storm_answers"] == STORM
    assert usage["mailboxes"][FLAKY]["storm_answers"] == 3
    assert simulator.stats.throttled == STORM

    # The storm paused its own mailbox's limit only (every worker waited Retry-After for it,
    # no one else did): one limit throttled, by that storm's 429s; no other mailbox met one.
    paused: Any = query(
        url,
        "SELECT key, throttled FROM graph_limits WHERE throttled > 0 OR paused_until IS NOT NULL",
    )
    assert len(paused) == 1 and paused[0]["throttled"] == STORM
    others = {m: usage["mailboxes"][m]["storm_answers"] for m in MAILBOXES if m != STORMY}
    assert others == {m: 3 if m == FLAKY else 0 for m in others}
