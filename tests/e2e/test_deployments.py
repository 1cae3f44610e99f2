"""prefect.yaml for real: a process work pool, `prefect deploy --all` from the repo root,
and two `prefect worker start` processes running the deployed flows against the simulator.

The workers get the database URL, the Graph credentials and the Graph URL from their
environment, as docs/schedule.md tells users to start them; their flow runs inherit it.
The module's tests share one database, one simulator and the two workers: starting
Python processes is most of the cost here.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from mailsync.simulator import GraphSimulator
from tests.e2e.helpers import BIN_DIR, Processes, child_env, query, run_cli, wait_for

# prefect.yaml's deployment names and work pool are the Prefect server's, shared: the
# modules that deploy, serve or run them take turns (a lock: tests/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("prefect-yaml")]

POOL = "mailsync-local"
DEPLOYMENTS = (
    "sync-mailbox/hourly",
    "cleanup/every-6h",
    "cleanup/recover-stuck",
    "chunk-report/daily",
    "sync-all/every-15m",
    "subscriptions/hourly",
    "sync-changed/on-change",
)
WORKERS = ("worker-1", "worker-2")


@dataclass
class Cluster:
    database_url: str
    simulator: GraphSimulator
    processes: Processes


@pytest.fixture(scope="module")
def deployed() -> Iterator[dict[str, uuid.UUID]]:
    """The pool and the seven deployments on the session's Prefect server, schedules paused
    (their runs would compete with the tests' own); {name: deployment id}."""
    prefect = str(BIN_DIR / "prefect")
    run_cli([prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"], child_env())
    output = run_cli([prefect, "--no-prompt", "deploy", "--all"], child_env(), timeout_s=180)
    ids: dict[str, uuid.UUID] = {}
    with get_client(sync_client=True) as client:
        for name in DEPLOYMENTS:
            assert f"Deployment '{name}' successfully created" in " ".join(output.split())
            deployment = client.read_deployment_by_name(name)
            client.pause_deployment(deployment.id)
            ids[name] = deployment.id
    yield ids


@pytest.fixture(scope="module")
def cluster(
    deployed: dict[str, uuid.UUID],
    pg_admin_url: str,
    template_db: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """A fresh database, a simulator, and two workers (3 flow runs at a time each) whose
    environment points at both, as a user would start them."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"mailsync_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = make_conninfo(**{**conninfo_to_dict(pg_admin_url), "dbname": name})
    processes = Processes(Path(tmp_path_factory.mktemp("workers")))
    with GraphSimulator() as simulator:
        env = child_env(
            MAILSYNC_DATABASE_URL=url,
            MAILSYNC_GRAPH_URL=simulator.url,
            MAILSYNC_TENANT_ID="contoso-e2e",
            MAILSYNC_CLIENT_ID=simulator.client_id,
            MAILSYNC_CLIENT_SECRET=simulator.client_secret,
            PREFECT_WORKER_QUERY_SECONDS="1",  # poll often: the tests wait on the workers
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
                    "3",
                ],
                env,
            )
        try:
            yield Cluster(url, simulator, processes)
        finally:
            processes.stop_all()


def finished_run(run_id: uuid.UUID, timeout_s: float) -> FlowRun:
    """The flow run once it reached a final state (polled through the Prefect API)."""

    def final() -> FlowRun | None:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_for(f"flow run {run_id} to finish", final, timeout_s, every_s=0.5)


def assert_completed(run: FlowRun, processes: Processes) -> None:
    if not (run.state and run.state.is_completed()):
        logs = "\n".join(processes.log(w)[-4000:] for w in WORKERS)
        raise AssertionError(f"flow run {run.name}: {run.state}\n{logs}")


def stored_ids(url: str, mailbox: str) -> list[str]:
    found = query(
        url,
        "SELECT e.graph_id FROM emails e JOIN stores s ON s.id = e.store_id WHERE s.mailbox = %s",
        mailbox,
    )
    return [r["graph_id"] for r in found]


def seed_interrupted_job(url: str, mailbox: str) -> Any:
    """A job whose worker died in chunk 1 of 2 an hour ago (its store, chunks)."""
    store = query(
        url,
        "INSERT INTO stores (business_id, name, mailbox) VALUES"
        " (gen_random_uuid(), %s, %s) RETURNING id, business_id",
        mailbox,
        mailbox,
    )[0]
    job = query(
        url,
        "INSERT INTO sync_queue (business_id, store_id, sync_type, status,"
        " chunk_size, page_size, estimated_emails, total_chunks, updated_at)"
        " VALUES (%s, %s, 'full', 'running', 300, 100, 600, 2,"
        "         now() - interval '1 hour') RETURNING id",
        store["business_id"],
        store["id"],
    )[0]["id"]
    query(
        url,
        "INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id,"
        " chunk_index, total_chunks, chunk_size, estimated_emails, status, attempts,"
        " worker_id, heartbeat_at, updated_at)"
        " SELECT %s, %s, %s, i, 2, 300, 300,"
        "        CASE i WHEN 1 THEN 'processing' ELSE 'pending' END,"
        "        CASE i WHEN 1 THEN 1 ELSE 0 END,"
        "        CASE i WHEN 1 THEN 'gone:1:x' END,"
        "        CASE i WHEN 1 THEN now() - interval '1 hour' END,"
        "        now() - interval '1 hour'"
        "   FROM generate_series(1, 2) AS i RETURNING id",
        job,
        store["business_id"],
        store["id"],
    )
    return job


def test_workers_run_the_deployed_sync_and_cleanup_and_the_resumed_sync(
    deployed: dict[str, uuid.UUID], cluster: Cluster
) -> None:
    database_url, processes = cluster.database_url, cluster.processes
    fresh = cluster.simulator.add_mailbox("fresh@contoso.example", 400, seed=41)
    interrupted = cluster.simulator.add_mailbox("interrupted@contoso.example", 600, seed=43)
    interrupted_job = seed_interrupted_job(database_url, "interrupted@contoso.example")

    sync_run = run_deployment(
        "sync-mailbox/hourly",
        timeout=0,
        parameters={"mailbox": "fresh@contoso.example", "chunk_size": 200, "page_size": 100},
    )
    cleanup_run = run_deployment("cleanup/every-6h", parameters={"stuck_after_s": 5}, timeout=0)

    assert_completed(finished_run(sync_run.id, 120), processes)
    assert_completed(finished_run(cleanup_run.id, 120), processes)
    assert set(stored_ids(database_url, "fresh@contoso.example")) == fresh.ids()
    # The cleanup, running in a deployment, resumed the job through the sync deployment.
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployed["sync-mailbox/hourly"]])
            )
        )
    resumed = [r for r in runs if r.parameters.get("job_id") == str(interrupted_job)]
    assert len(resumed) == 1
    assert_completed(finished_run(resumed[0].id, 120), processes)
    job = query(database_url, "SELECT * FROM sync_queue WHERE id = %s", interrupted_job)[0]
    chunks = query(
        database_url,
        "SELECT chunk_index, status, attempts, error_category,"
        " error_message FROM chunked_sync_jobs"
        " WHERE parent_sync_job_id = %s ORDER BY chunk_index",
        interrupted_job,
    )
    assert job["status"] == "completed", chunks
    ids = stored_ids(database_url, "interrupted@contoso.example")
    assert len(ids) == len(set(ids)) and set(ids) == interrupted.ids()


def test_two_workers_sync_six_mailboxes_in_parallel_each_in_order(cluster: Cluster) -> None:
    database_url = cluster.database_url
    cluster.simulator.faults.latency_ms = 20
    boxes = {
        f"team{i}@contoso.example": cluster.simulator.add_mailbox(
            f"team{i}@contoso.example", 600, seed=50 + i
        )
        for i in range(6)
    }
    # Each mailbox's delta requests wait until two mailboxes have sent one: syncs that run
    # in parallel overlap for certain; a serial one would stall on the simulator's timeout.
    cluster.simulator.faults.delta_rendezvous = 2
    try:
        runs = [
            run_deployment(
                "sync-mailbox/hourly",
                timeout=0,
                parameters={"mailbox": mailbox, "chunk_size": 200, "page_size": 100},
            )
            for mailbox in boxes
        ]
        finished = [finished_run(run.id, 150) for run in runs]
    finally:
        cluster.simulator.faults.delta_rendezvous = 0
    for run in finished:
        assert_completed(run, cluster.processes)
    # Both workers took runs: scale-out is by adding worker processes.
    assert {run.labels.get("prefect.worker.name") for run in finished} == set(WORKERS)
    for mailbox, box in boxes.items():
        ids = stored_ids(database_url, mailbox)
        assert len(ids) == len(set(ids)) and set(ids) == box.ids(), mailbox
    chunks = query(
        database_url,
        "SELECT c.*, s.mailbox FROM chunked_sync_jobs c"
        " JOIN stores s ON s.id = c.store_id"
        " WHERE s.mailbox = ANY(%s)"
        " ORDER BY s.mailbox, c.chunk_index",
        list(boxes),
    )
    assert len(chunks) == 6 * 3  # the folder's first round in three chunks, per mailbox
    # Never claimed twice: one attempt each, all of a job's chunks by its one flow run.
    assert all(c["attempts"] == 1 and c["status"] == "completed" for c in chunks)
    for _, job_chunks in itertools.groupby(chunks, key=lambda c: c["mailbox"]):
        ordered = list(job_chunks)
        assert len({c["worker_id"] for c in ordered}) == 1
        for before, after in itertools.pairwise(ordered):  # each mailbox's chunks in order
            assert before["completed_at"] <= after["started_at"]
    assert len({c["worker_id"] for c in chunks}) == 6  # six flow-run processes
    jobs = query(
        database_url,
        "SELECT q.started_at, q.completed_at FROM sync_queue q"
        " JOIN stores s ON s.id = q.store_id WHERE s.mailbox = ANY(%s)",
        list(boxes),
    )
    overlapping = [
        (a, b)
        for a, b in itertools.combinations(jobs, 2)
        if a["started_at"] < b["completed_at"] and b["started_at"] < a["completed_at"]
    ]
    assert overlapping, "no two mailboxes synced at the same time"


def test_a_workers_delta_reset_warning_is_in_its_runs_logs(cluster: Cluster) -> None:
    # mailsync's own warnings reach the run's logs in a worker's flow run process too (the
    # CLI's case: tests/integration/test_tenant_scale.py).
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    box = cluster.simulator.add_mailbox("reset@contoso.example", 60, seed=71)
    parameters = {"mailbox": "reset@contoso.example", "chunk_size": 200, "page_size": 100}
    first = run_deployment("sync-mailbox/hourly", timeout=0, parameters=parameters)
    assert_completed(finished_run(first.id, 120), cluster.processes)
    cluster.simulator.expire_delta_tokens("reset@contoso.example")  # the next link: 410

    second = run_deployment("sync-mailbox/hourly", timeout=0, parameters=parameters)
    assert_completed(finished_run(second.id, 120), cluster.processes)

    assert set(stored_ids(cluster.database_url, "reset@contoso.example")) == box.ids()

    def reset_lines() -> list[Any] | None:
        # The run's process ships its last log batch as it exits, after its final state.
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[second.id])))
        return [log for log in logs if "delta state expired" in log.message] or None

    resets = wait_for("the run's delta reset warning", reset_lines, 30, every_s=0.5)
    assert [(log.name, log.level) for log in resets] == [("mailsync.sync.rounds", 30)]
    assert "reset@contoso.example" in resets[0].message
