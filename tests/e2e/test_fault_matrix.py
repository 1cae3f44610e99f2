"""The fault matrix rows no other test proves: each fault against a real sync (a `mailsync
sync` process, the session's PostgreSQL, the simulator over loopback, the Prefect API),
with its recovery time measured and every message of the mailbox stored exactly once.

docs/reliability.md is the whole matrix; its other rows point at the tests that already
prove them (SIGKILL and SIGTERM in tests/e2e/test_recovery.py, a malformed page and an
expired token in tests/integration/test_sync.py, …). Run with `-s` to see the measurements:
one line per row, `fault-matrix | <row> | <outcome> | <recovery>`.

Short leases (heartbeat 0.5 s, stuck after 5 s; 2 s in the Retry-After row) and small
mailboxes keep the module short; the one deliberate wait is a single real 6 s Retry-After,
three times that row's stuck threshold.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailsync.simulator import GraphSimulator
from tests.e2e.helpers import BIN_DIR, Processes, child_env, query, wait_for

pytestmark = pytest.mark.e2e

MAILBOX = "matrix@contoso.example"
LEASES = {"MAILSYNC_HEARTBEAT_S": "0.5", "MAILSYNC_STUCK_AFTER_S": "5"}
# The Retry-After row: a wait three times the stuck threshold, the lease renewed 4x a threshold
SHORT_LEASES = {"MAILSYNC_HEARTBEAT_S": "0.5", "MAILSYNC_STUCK_AFTER_S": "2"}
RETRY_AFTER_S = 6.0


@dataclass
class Run:
    """One row's sync: the process, the mailbox, and what the row measured."""

    database_url: str
    simulator: GraphSimulator
    box: Any
    proc: subprocess.Popen[bytes] | None = None
    marks: dict[str, float] = field(default_factory=dict)


def report(row: str, outcome: str, recovery: str) -> None:
    print(f"\nfault-matrix | {row} | {outcome} | {recovery}")


def start_sync(run: Run, processes: Processes, name: str = "sync", **env: str) -> None:
    run.proc = processes.start(
        name,
        [
            str(BIN_DIR / "mailsync"),
            "sync",
            "--mailbox",
            MAILBOX,
            "--folder",
            "inbox",
            "--graph-url",
            run.simulator.url,
            "--chunk-size",
            "300",
            "--page-size",
            "50",
            "--json",
        ],
        child_env(**{**LEASES, **env}),
    )


def mid_chunk(url: str) -> dict[str, Any] | None:
    found = query(
        url,
        "SELECT id, chunk_index, emails_processed FROM chunked_sync_jobs"
        " WHERE status = 'processing' AND emails_processed > 0"
        "   AND emails_processed < chunk_size",
    )
    return found[0] if found else None


def committed_pages(url: str) -> int:
    """Pages committed so far, over every chunk of every job (each page is one commit)."""
    row = query(url, "SELECT coalesce(sum(emails_processed), 0) AS n FROM chunked_sync_jobs")
    return int(row[0]["n"])


def assert_exact(run: Run) -> list[dict[str, Any]]:
    """Every message of the mailbox stored once, nothing else; the job completed. Its chunks."""
    ids = [
        r["graph_id"]
        for r in query(run.database_url, "SELECT graph_id FROM emails WHERE deleted_at IS NULL")
    ]
    assert len(ids) == len(set(ids)), "a message stored twice"
    assert set(ids) == run.box.ids(), "messages lost or extra"
    jobs = query(run.database_url, "SELECT status FROM sync_queue ORDER BY created_at")
    assert jobs[-1]["status"] == "completed", jobs
    return query(
        run.database_url,
        "SELECT chunk_index, kind, status, attempts, error_category"
        " FROM chunked_sync_jobs ORDER BY chunk_index",
    )


def finish(run: Run, timeout_s: float = 60) -> float:
    """Wait for the sync process to exit 0; the moment it did."""
    assert run.proc is not None
    run.proc.wait(timeout_s)
    assert run.proc.returncode == 0, f"mailsync sync exited {run.proc.returncode}"
    return time.monotonic()


# -- PostgreSQL faults ---------------------------------------------------------------------


def pg_ctl_restart(admin_url: str) -> None:
    """`pg_ctl restart -m fast` on the server behind admin_url, as the user that owns its
    data directory (pgserver's own `pgserver` user when the tests run as root)."""
    import os
    import pwd

    with psycopg.connect(admin_url, autocommit=True) as conn:
        pgdata = Path(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
    try:
        postgres = (pgdata / "postmaster.opts").read_text().split()[0]
    except OSError:
        pytest.skip("the test PostgreSQL is not local: set no DATABASE_URL to run this row")
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    pg_ctl = Path(postgres).with_name("pg_ctl")
    command = [
        str(pg_ctl),
        "-w",
        "-D",
        str(pgdata),
        "-m",
        "fast",
        "-l",
        str(pgdata / "log"),
        "restart",
    ]
    user = owner if os.geteuid() == 0 and owner != "root" else None
    subprocess.run(command, check=True, capture_output=True, timeout=60, user=user)


def terminate_backends(admin_url: str, database_url: str) -> int:
    """pg_terminate_backend on every connection to the test's database; how many."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


DB_FAULTS: dict[str, Callable[[str, str], object]] = {
    "postgres-restart": lambda admin, url: pg_ctl_restart(admin),
    "backends-terminated": terminate_backends,
}


@pytest.mark.parametrize("fault", list(DB_FAULTS))
def test_a_database_lost_mid_chunk_is_survived_exactly(
    fault: str,
    runtime: Any,
    simulator: GraphSimulator,
    database_url: str,
    pg_admin_url: str,
    processes: Processes,
) -> None:
    """The worker's connections die in the middle of a chunk: the page in flight rolls
    back, the attempt fails as `db` and is retried from the last committed page."""
    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 900, seed=61))
    simulator.faults.latency_ms = 40
    start_sync(run, processes, MAILSYNC_RETRY_BASE_S="1", MAILSYNC_RETRY_MAX_S="10")
    wait_for("a chunk part-way", lambda: mid_chunk(database_url), timeout_s=60, every_s=0.02)
    before = committed_pages(database_url)
    hit = time.monotonic()
    DB_FAULTS[fault](pg_admin_url, database_url)
    faulted = time.monotonic()
    wait_for(
        "a page committed after the fault",
        lambda: committed_pages(database_url) > before,
        timeout_s=60,
        every_s=0.02,
    )
    resumed = time.monotonic()
    done = finish(run)
    chunks = assert_exact(run)
    retried = [c for c in chunks if c["attempts"] > 1]
    assert len(retried) <= 1 and all(c["status"] == "completed" for c in chunks)
    report(
        fault,
        f"completed exact, {len(retried)} chunk retried",
        f"fault took {faulted - hit:.2f} s; first commit after it +{resumed - faulted:.2f} s;"
        f" sync done +{done - faulted:.2f} s",
    )


# -- Graph faults --------------------------------------------------------------------------


def test_a_long_retry_after_is_waited_once_with_the_lease_kept(
    runtime: Any, simulator: GraphSimulator, database_url: str, processes: Processes
) -> None:
    """One 429 asking for longer than the stuck threshold (3x here: Graph's usual ask is
    30 s against the default 30 s threshold): the request waits it out, the chunk's
    heartbeat keeps the lease all along (never stale, polled through the wait), nothing is
    retried above it."""
    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 300, seed=67))
    simulator.faults.retry_after_s = RETRY_AFTER_S
    simulator.faults.throttle_after_pages = 3
    start = time.monotonic()
    start_sync(run, processes, **SHORT_LEASES)
    wait_for("the 429", lambda: simulator.stats.throttled, timeout_s=60, every_s=0.02)
    throttled = time.monotonic()
    # One sync asks one request at a time: the next 200 is the retry after the wait.
    answered = simulator.stats.by_status.get(200, 0)
    stale_seen = []

    def retried() -> bool:
        stale_seen.append(
            query(
                database_url,
                "SELECT count(*) AS n FROM chunked_sync_jobs WHERE status = 'processing'"
                " AND heartbeat_at < now() - make_interval(secs => %s)",
                float(SHORT_LEASES["MAILSYNC_STUCK_AFTER_S"]),
            )[0]["n"]
        )
        return simulator.stats.by_status.get(200, 0) > answered

    wait_for("the retried request answered", retried, timeout_s=60, every_s=0.1)
    waited = time.monotonic() - throttled
    done = finish(run, 90)
    chunks = assert_exact(run)
    assert simulator.stats.throttled == 1
    assert len(stale_seen) >= 20 and not any(stale_seen), stale_seen  # checked all along
    assert all(c["attempts"] == 1 for c in chunks)
    assert RETRY_AFTER_S - 1 <= waited < RETRY_AFTER_S + 10
    report(
        f"429 Retry-After: {RETRY_AFTER_S:g}",
        "completed exact, no attempt retried",
        f"waited {waited:.2f} s for the {RETRY_AFTER_S:g} s asked"
        f" (stuck after {SHORT_LEASES['MAILSYNC_STUCK_AFTER_S']} s);"
        f" sync {done - start:.2f} s in all",
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_storm_is_retried_through(
    status: int, runtime: Any, simulator: GraphSimulator, database_url: str
) -> None:
    """Ten 5xx in a row from page 3, more than one request's seven tries: one chunk attempt
    fails as graph_server and the next continues from its last committed page."""
    from mailsync.flows.sync_mailbox import sync_mailbox

    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 600, seed=71))
    simulator.faults.server_error_status = status
    simulator.faults.server_error_burst = 10
    simulator.faults.server_error_after_pages = 3
    start = time.monotonic()
    summary = sync_mailbox(
        mailbox=MAILBOX, folder="inbox", chunk_size=300, page_size=50, graph_url=simulator.url
    )
    took = time.monotonic() - start
    assert summary["status"] == "completed"
    assert simulator.stats.by_status.get(status, 0) == 10
    chunks = assert_exact(run)
    assert [c["attempts"] for c in chunks if c["attempts"] != 1] == [2]
    report(
        f"{status} storm (10 in a row)",
        "completed exact, 1 chunk attempt retried",
        f"sync {took:.2f} s in all",
    )


def test_a_graph_that_stops_answering_times_out_and_recovers(
    runtime: Any, simulator: GraphSimulator, database_url: str, processes: Processes
) -> None:
    """Mid-chunk, Graph stops answering (each request slower than MAILSYNC_HTTP_TIMEOUT_S);
    the timeouts are retried; once it answers again the sync finishes exactly."""
    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 900, seed=73))
    simulator.faults.latency_ms = 20
    start_sync(run, processes, MAILSYNC_HTTP_TIMEOUT_S="0.3")
    wait_for("a chunk part-way", lambda: mid_chunk(database_url), timeout_s=60, every_s=0.02)
    served = simulator.stats.data_requests
    simulator.faults.latency_ms = 1000  # more than three times the timeout
    wait_for(
        "three requests timed out",
        lambda: simulator.stats.data_requests >= served + 3,
        timeout_s=30,
        every_s=0.05,
    )
    simulator.faults.latency_ms = 0
    answering = time.monotonic()
    before = committed_pages(database_url)
    wait_for(
        "a commit once Graph answers",
        lambda: committed_pages(database_url) > before,
        timeout_s=60,
        every_s=0.02,
    )
    resumed = time.monotonic()
    done = finish(run)
    chunks = assert_exact(run)
    report(
        "Graph stops answering (timeouts)",
        f"completed exact, attempts {[c['attempts'] for c in chunks]}",
        f"first commit +{resumed - answering:.2f} s after Graph answers again;"
        f" sync done +{done - answering:.2f} s",
    )


def test_two_workers_racing_for_one_mailbox_store_it_once(
    runtime: Any, simulator: GraphSimulator, database_url: str, processes: Processes
) -> None:
    """Two `mailsync sync` processes for the same mailbox at the same moment: one job (one
    active job per store), each chunk claimed by one worker, every message stored once."""
    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 900, seed=79))
    simulator.faults.latency_ms = 10
    start = time.monotonic()
    start_sync(run, processes, name="sync-a")
    first = run.proc
    start_sync(run, processes, name="sync-b")
    second = run.proc
    assert first is not None and second is not None
    codes = (first.wait(90), second.wait(90))
    done = time.monotonic()
    chunks = assert_exact(run)
    jobs = query(database_url, "SELECT status FROM sync_queue")
    logs = processes.log("sync-a")[-2000:] + processes.log("sync-b")[-2000:]
    assert len(jobs) == 1, (jobs, logs)
    assert 0 in codes, logs
    assert all(c["attempts"] == 1 for c in chunks), chunks
    report(
        "two workers, one mailbox",
        f"one job, completed exact; exit codes {codes}",
        f"both done {done - start:.2f} s after start",
    )


# -- cancellation from the API, through a real worker ---------------------------------------

POOL = "mailsync-fault-matrix"


def test_a_run_cancelled_from_the_api_releases_its_chunk_and_resumes_exactly(
    runtime: Any, simulator: GraphSimulator, database_url: str, processes: Processes
) -> None:
    """A sync-mailbox run started by a `prefect worker` (process pool) is cancelled through
    the API, as the UI's Cancel does: the worker kills the run's process with SIGTERM, which
    gives the chunk back at once (attempt not counted); the next run continues exactly."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    from mailsync.flows.sync_mailbox import sync_mailbox
    from tests.e2e.helpers import REPO_ROOT, run_cli

    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 900, seed=83))
    prefect = str(BIN_DIR / "prefect")
    run_cli([prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"], child_env())
    source = flow.from_source(str(REPO_ROOT), "flows/sync_mailbox.py:sync_mailbox")
    deployment_id = source.deploy(
        name="fault-matrix", work_pool_name=POOL, print_next_steps=False, ignore_warnings=True
    )
    processes.start(
        "worker",
        [prefect, "worker", "start", "--pool", POOL, "--limit", "1"],
        child_env(**LEASES, PREFECT_WORKER_QUERY_SECONDS="1"),
    )
    simulator.faults.latency_ms = 60
    flow_run = run_deployment(
        deployment_id,
        timeout=0,
        parameters={
            "mailbox": MAILBOX,
            "folder": "inbox",
            "chunk_size": 300,
            "page_size": 50,
            "graph_url": simulator.url,
        },
    )
    victim = wait_for(
        "a chunk part-way", lambda: mid_chunk(database_url), timeout_s=90, every_s=0.02
    )
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
    cancelled = time.monotonic()

    def released() -> dict[str, Any] | None:
        row = query(
            database_url,
            "SELECT status, attempts, error_category FROM chunked_sync_jobs WHERE id = %s",
            victim["id"],
        )[0]
        return row if row["status"] == "pending" else None

    row = wait_for("the chunk given back", released, timeout_s=60, every_s=0.02)
    release_s = time.monotonic() - cancelled

    def final_state() -> str | None:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run.id).state
        return state.name if state and state.is_final() else None

    state = wait_for("the run's final state", final_state, timeout_s=60, every_s=0.2)
    assert state == "Cancelled"
    assert (row["attempts"], row["error_category"]) == (0, "cancelled")
    simulator.faults.latency_ms = 0
    job_id = query(database_url, "SELECT id FROM sync_queue")[0]["id"]
    resumed = sync_mailbox(job_id=str(job_id), graph_url=simulator.url)
    assert resumed["status"] == "completed"
    assert_exact(run)
    report(
        "cancelled from the API (worker, process pool)",
        f"run {state}, chunk pending (attempt not counted), resumed exact",
        f"cancel -> chunk claimable {release_s:.2f} s",
    )


# -- mail that changes while it is paged ---------------------------------------------------


def test_mail_added_deleted_and_moved_while_paging_is_exact_after_the_next_sync(
    runtime: Any, simulator: GraphSimulator, database_url: str
) -> None:
    """The whole mailbox changes under a first sync: adds and deletes between keyset pages,
    then adds, deletes and moves in both directions (inbox, archive) inside a delta round.
    No message is ever stored twice; the next (incremental) sync leaves the live rows equal
    to the mailbox, each moved message one row in its new folder."""
    from mailsync.flows.sync_mailbox import sync_mailbox
    from mailsync.simulator.folders import DEFAULT_TREE

    box = simulator.add_mailbox(MAILBOX, 800, seed=89, folders=DEFAULT_TREE)
    simulator.faults.mutate_every_pages = 3
    simulator.faults.add_per_mutation = 4
    simulator.faults.delete_per_mutation = 3
    simulator.faults.delta_mutations = [
        {"op": "add", "count": 5, "folder": "inbox"},
        {"op": "delete", "count": 5, "folder": "inbox"},
        {"op": "move", "count": 10, "folder": "inbox", "to": "archive"},
        {"op": "move", "count": 10, "folder": "archive", "to": "inbox"},
    ]
    simulator.faults.mutate_after_delta_pages = 2

    def live() -> dict[str, str]:
        found = query(
            database_url, "SELECT graph_id, parent_folder_id FROM emails WHERE deleted_at IS NULL"
        )
        assert len(found) == len({r["graph_id"] for r in found}), "a message stored twice"
        return {r["graph_id"]: r["parent_folder_id"] for r in found}

    options = {
        "mailbox": MAILBOX,
        "folder": "all",
        "chunk_size": 200,
        "page_size": 50,
        "graph_url": simulator.url,
    }
    first = sync_mailbox(**options)
    assert simulator.faults.mutate_after_delta_pages is None  # the moves landed mid-round
    assert first["status"] == "completed" and box.added_ids and box.deleted_ids
    live()
    simulator.faults.mutate_every_pages = 0
    start = time.monotonic()
    second = sync_mailbox(**options)
    took = time.monotonic() - start
    assert second["status"] == "completed" and second["sync_type"] == "incremental"
    assert live() == {m.id: m.parentFolderId for m in box.messages()}
    report(
        "mail added, deleted, moved while paging",
        "no duplicate at any point; exact after the next incremental sync",
        f"the incremental sync took {took:.2f} s",
    )
