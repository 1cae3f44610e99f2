"""The fault matrix rows no other test proves: each fault against a real sync (a `mailsync
sync` process, a real PostgreSQL, the simulator over loopback, the Prefect API), every
message of the mailbox stored exactly once afterwards.

docs/reliability.md is the whole matrix; its other rows point at the tests that already
prove them (SIGKILL and SIGTERM in tests/e2e/test_recovery.py, a malformed page and an
expired token in tests/integration/test_sync.py, …). A fault lands on an event: the
simulator holds a page request of a known chunk (`holding`), the fault is injected, then the
page is answered. Run with `-n0 -s` to see one line per row, `fault-matrix | <row> |
<outcome> | <timings>`: the timings are printed, never asserted.

Short leases (heartbeat 0.5 s, stuck after 5 s; 2 s in the Retry-After row) and small
mailboxes keep the module short; the one deliberate wait is a single real 6 s Retry-After,
three times that row's stuck threshold.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailsync.simulator import GraphSimulator
from tests.e2e.helpers import BIN_DIR, Processes, child_env, holding, query, wait_for

pytestmark = pytest.mark.e2e

MAILBOX = "matrix@contoso.example"
LEASES = {"MAILSYNC_HEARTBEAT_S": "0.5", "MAILSYNC_STUCK_AFTER_S": "5"}
# The Retry-After row: a wait three times the stuck threshold, the lease renewed 4x a threshold
SHORT_LEASES = {"MAILSYNC_HEARTBEAT_S": "0.5", "MAILSYNC_STUCK_AFTER_S": "2"}
RETRY_AFTER_S = 6.0
# Pages served before the hold (a $count request is one): the next, held, is chunk 0's third
# or so of six (300 messages in pages of 50), whatever the planning asked first.
MID_CHUNK_PAGES = 3


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


def assert_part_way(url: str) -> dict[str, Any]:
    """The one chunk in processing, not finished: the held page is one of its pages."""
    found = query(
        url,
        "SELECT id, chunk_index, emails_processed, chunk_size FROM chunked_sync_jobs"
        " WHERE status = 'processing'",
    )
    assert len(found) == 1, found
    assert found[0]["emails_processed"] < found[0]["chunk_size"], found
    return found[0]


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


@pytest.fixture()
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(superuser URL, database URL with the schema) of a PostgreSQL of this test's own: a
    restart of the session's server would cut every other test's connections (an xdist
    worker beside this one). Its directory is short: the socket lives in it (107 bytes)."""
    from mailsync.store.migrate import upgrade
    from mailsync.store.pgembed import embedded_database_url, stop_embedded
    from tests.conftest import with_dbname

    home = Path(tempfile.mkdtemp(prefix="mailsync-pg-"))
    try:
        admin = embedded_database_url(home, keep_running=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE mailsync")
        url = with_dbname(admin, "mailsync")
        upgrade(url)
        monkeypatch.setenv("MAILSYNC_DATABASE_URL", url)
        yield admin, url
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("fault", list(DB_FAULTS))
def test_a_database_lost_mid_chunk_is_survived_exactly(
    fault: str,
    simulator: GraphSimulator,
    processes: Processes,
    request: pytest.FixtureRequest,
) -> None:
    """The worker's connections die in the middle of a chunk (its third page held on the
    wire): the page in flight rolls back, the attempt fails as `db` and is retried from the
    last committed page."""
    if fault == "postgres-restart":
        pg_admin_url, database_url = request.getfixturevalue("own_postgres")
    else:
        pg_admin_url = request.getfixturevalue("pg_admin_url")
        database_url = request.getfixturevalue("database_url")
    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 900, seed=61))
    with holding(simulator.faults, MID_CHUNK_PAGES) as wait_held:
        start_sync(run, processes, MAILSYNC_RETRY_BASE_S="1", MAILSYNC_RETRY_MAX_S="10")
        wait_held()
        assert_part_way(database_url)
        hit = time.monotonic()
        DB_FAULTS[fault](pg_admin_url, database_url)
        faulted = time.monotonic()
    done = finish(run)
    chunks = assert_exact(run)
    retried = [c for c in chunks if c["attempts"] > 1]
    assert len(retried) <= 1 and all(c["status"] == "completed" for c in chunks)
    report(
        fault,
        f"completed exact, {len(retried)} chunk retried",
        f"fault took {faulted - hit:.2f} s; sync done +{done - faulted:.2f} s",
    )


# -- Graph faults --------------------------------------------------------------------------


def test_a_long_retry_after_is_waited_once_with_the_lease_kept(
    runtime: Any, simulator: GraphSimulator, database_url: str, processes: Processes
) -> None:
    """One 429 asking for longer than the stuck threshold (3x here: Graph's usual ask is
    30 s against the default 30 s threshold): the request waits it out, the chunk's
    heartbeat keeps the lease all along, nothing is retried above it.

    The retried request is held on the wire (the 429 is not a page: the retry is the 4th),
    so the test looks at that moment: the mailbox's pause had ended by the database's clock
    (the wait was Graph's ask, not a shorter backoff), and the chunk's heartbeat is fresh
    though the wait was three stuck thresholds long."""
    run = Run(database_url, simulator, simulator.add_mailbox(MAILBOX, 300, seed=67))
    simulator.faults.retry_after_s = RETRY_AFTER_S
    simulator.faults.throttle_after_pages = 3
    stuck_after_s = float(SHORT_LEASES["MAILSYNC_STUCK_AFTER_S"])
    start = time.monotonic()
    with holding(simulator.faults, 3) as wait_held:
        start_sync(run, processes, **SHORT_LEASES)
        wait_held()
        assert simulator.stats.throttled == 1
        pause = query(
            database_url,
            "SELECT throttled, paused_until IS NOT NULL AS paused,"
            " paused_until <= now() AS ended FROM graph_limits WHERE throttled > 0",
        )
        assert pause == [{"throttled": 1, "paused": True, "ended": True}], pause
        stale = query(
            database_url,
            "SELECT count(*) AS n FROM chunked_sync_jobs WHERE status = 'processing'"
            " AND heartbeat_at < now() - make_interval(secs => %s)",
            stuck_after_s,
        )
        assert stale == [{"n": 0}]  # what a cleanup would find stuck: nothing
    done = finish(run, 90)
    chunks = assert_exact(run)
    assert simulator.stats.throttled == 1
    assert all(c["attempts"] == 1 for c in chunks)
    report(
        f"429 Retry-After: {RETRY_AFTER_S:g}",
        "completed exact, no attempt retried",
        f"stuck after {SHORT_LEASES['MAILSYNC_STUCK_AFTER_S']} s; sync {done - start:.2f} s",
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
    with holding(simulator.faults, MID_CHUNK_PAGES) as wait_held:
        start_sync(run, processes, MAILSYNC_HTTP_TIMEOUT_S="0.3")
        wait_held()
        assert_part_way(database_url)
        served = simulator.stats.data_requests
        simulator.faults.latency_ms = 1000  # more than three times the timeout
    # Released into the latency: the held page and its retries each time out once.
    wait_for(
        "three requests timed out",
        lambda: simulator.stats.data_requests >= served + 3,
        timeout_s=30,
        every_s=0.05,
    )
    simulator.faults.latency_ms = 0
    answering = time.monotonic()
    done = finish(run)
    chunks = assert_exact(run)
    report(
        "Graph stops answering (timeouts)",
        f"completed exact, attempts {[c['attempts'] for c in chunks]}",
        f"sync done +{done - answering:.2f} s after Graph answers again",
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
    with holding(simulator.faults, MID_CHUNK_PAGES) as wait_held:
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
        wait_held()
        victim = assert_part_way(database_url)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

        def final_state() -> str | None:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run.id).state
            return state.name if state and state.is_final() else None

        # The worker kills the run's process while its page is still held.
        state = wait_for("the run's final state", final_state, timeout_s=60, every_s=0.2)
    assert state == "Cancelled"

    def released() -> dict[str, Any] | None:
        row = query(
            database_url,
            "SELECT status, attempts, error_category, worker_id FROM chunked_sync_jobs"
            " WHERE id = %s",
            victim["id"],
        )[0]
        return row if row["status"] != "processing" else None

    row = wait_for("the killed run's chunk", released, timeout_s=30)
    assert row == {
        "status": "pending",
        "attempts": 0,
        "error_category": "cancelled",
        "worker_id": None,
    }, row
    job_id = query(database_url, "SELECT id FROM sync_queue")[0]["id"]
    resumed = sync_mailbox(job_id=str(job_id), graph_url=simulator.url)
    assert resumed["status"] == "completed"
    chunks = assert_exact(run)
    assert all(c["attempts"] == 1 for c in chunks), chunks  # the cancelled one not counted
    report(
        "cancelled from the API (worker, process pool)",
        f"run {state}, chunk pending (attempt not counted), resumed exact",
        "the chunk was claimable once the run was Cancelled",
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
