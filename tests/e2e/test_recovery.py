"""A worker killed in the middle of a chunk, and two cleanups at once, with real processes.

The sync runs as `mailsync sync` in a subprocess that reaches this test's Graph simulator
over loopback; cleanup runs here (the flow, as `mailsync cleanup` would) or as the CLI.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import psycopg
import pytest

from mailsync.flows.cleanup import cleanup
from mailsync.store.maintenance import CLEANUP_LOCK_KEY
from tests.e2e.helpers import BIN_DIR, Processes, child_env, holding, query, run_cli

pytestmark = pytest.mark.e2e

MAILBOX = "killed@contoso.example"
HEARTBEAT_S = 0.5
STUCK_AFTER_S = 2.0  # four missed heartbeats of the killed worker
# Pages served before the hold (a $count request is one): the held one is a few pages into
# the first chunk (500 messages in pages of 50).
MID_CHUNK_PAGES = 3


def _part_way(url: str) -> dict[str, Any]:
    """The one chunk in processing, not finished: the held page is one of its pages."""
    found = query(
        url,
        "SELECT id, parent_sync_job_id, chunk_index, emails_processed, chunk_size"
        "  FROM chunked_sync_jobs WHERE status = 'processing'",
    )
    assert len(found) == 1, found
    assert found[0]["emails_processed"] < found[0]["chunk_size"], found
    return found[0]


def _wait_until_stuck(url: str, chunk_id: Any) -> None:
    """Wait out the killed worker's lease: until its last heartbeat is STUCK_AFTER_S old by
    the database's clock (the one the cleanup reads). A lease is time; this is its length."""
    left = query(
        url,
        "SELECT extract(epoch FROM heartbeat_at + make_interval(secs => %s) - now())::float"
        " AS s FROM chunked_sync_jobs WHERE id = %s",
        STUCK_AFTER_S,
        chunk_id,
    )[0]["s"]
    time.sleep(max(0.0, left) + 0.05)


def test_a_sync_killed_mid_chunk_is_recovered_and_completes_exactly(
    runtime: Any, simulator: Any, database_url: str, processes: Processes
) -> None:
    box = simulator.add_mailbox(MAILBOX, 1500, seed=31)
    with holding(simulator.faults, MID_CHUNK_PAGES) as wait_held:
        sync = processes.start(
            "sync",
            [
                str(BIN_DIR / "mailsync"),
                "sync",
                "--mailbox",
                MAILBOX,
                "--graph-url",
                simulator.url,
                "--chunk-size",
                "500",
                "--page-size",
                "50",
                "--json",
            ],
            child_env(MAILSYNC_HEARTBEAT_S=str(HEARTBEAT_S)),
        )
        wait_held()
        victim = _part_way(database_url)
        sync.send_signal(signal.SIGKILL)
        sync.wait(10)
    assert sync.returncode == -signal.SIGKILL
    _wait_until_stuck(database_url, victim["id"])
    # One cleanup, as a schedule would run it: it finds the chunk stuck, puts it back and
    # resumes the job (here, in this process), which claims the chunk again.
    result = cleanup(stuck_after_s=STUCK_AFTER_S, retention=False)

    assert result["stuck_reset"] == 1 and result["jobs_resumed"] == 1
    job = query(
        database_url, "SELECT * FROM sync_queue WHERE id = %s", victim["parent_sync_job_id"]
    )[0]
    assert job["status"] == "completed"
    ids = [r["graph_id"] for r in query(database_url, "SELECT graph_id FROM emails")]
    assert len(ids) == len(set(ids)) == len(box.ids()) == 1500
    assert set(ids) == box.ids()
    chunks = query(
        database_url,
        "SELECT chunk_index, attempts, status FROM chunked_sync_jobs ORDER BY chunk_index",
    )
    assert [c["status"] for c in chunks] == ["completed"] * 3  # the folder's round, 3 chunks
    assert {c["chunk_index"]: c["attempts"] for c in chunks if c["attempts"] != 1} == {
        victim["chunk_index"]: 2
    }


def test_a_second_cleanup_process_exits_cleanly_while_one_runs(database_url: str) -> None:
    """The CLI under a held cleanup lock says so and exits 0; once free, it does the work."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        store = conn.execute(
            "INSERT INTO stores (business_id, name, mailbox) VALUES (gen_random_uuid(), 'x',"
            " 'x@contoso.example') RETURNING id, business_id"
        ).fetchone()
        job = conn.execute(
            "INSERT INTO sync_queue (business_id, store_id, sync_type, status, chunk_size,"
            " page_size, total_chunks) VALUES (%s, %s, 'full', 'running', 100, 50, 1)"
            " RETURNING id",
            (store[1], store[0]),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id,"
            " chunk_index, total_chunks, chunk_size, estimated_emails, status, attempts,"
            " max_attempts, worker_id, heartbeat_at) VALUES (%s, %s, %s, 1, 1, 100, 100,"
            " 'processing', 3, 3, 'gone:1:x', now() - interval '1 minute')",
            (job, store[1], store[0]),
        )
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (CLEANUP_LOCK_KEY,)).fetchone()[0]
        command = [str(BIN_DIR / "mailsync"), "cleanup", "--stuck-after", "5", "--json"]
        skipped = json.loads(run_cli(command, child_env()).strip().splitlines()[-1])
        assert skipped["skipped"] == "another cleanup is running"
        assert skipped["stuck_failed"] == 0
    worked = json.loads(run_cli(command, child_env()).strip().splitlines()[-1])
    assert "skipped" not in worked
    assert (worked["stuck_failed"], worked["jobs_closed"]) == (1, 1)
    status = query(database_url, "SELECT status FROM sync_queue WHERE id = %s", job)[0]
    assert status["status"] == "partial_failure"


def test_a_sync_killed_in_a_delta_round_resumes_from_its_last_page(
    runtime: Any, simulator: Any, database_url: str, processes: Processes
) -> None:
    """SIGKILL in the middle of an incremental round: the resumed job continues the round
    from its last committed nextLink (not from the start of the round) and ends exact."""
    from mailsync.flows.sync_mailbox import sync_mailbox

    box = simulator.add_mailbox(MAILBOX, 600, seed=37)
    first = sync_mailbox(mailbox=MAILBOX, folder="inbox", graph_url=simulator.url)
    assert first["status"] == "completed"
    changed = box.mark_read(500, read=True)  # 500 changes: 25 delta pages of 20
    box.delete_messages(40)
    box.add_messages(40)
    pages_before = simulator.stats.delta_pages
    with holding(simulator.faults, 3) as wait_held:  # the round's 4th page is held
        sync = processes.start(
            "sync",
            [
                str(BIN_DIR / "mailsync"),
                "sync",
                "--mailbox",
                MAILBOX,
                "--folder",
                "inbox",
                "--graph-url",
                simulator.url,
                "--page-size",
                "20",
                "--json",
            ],
            child_env(MAILSYNC_HEARTBEAT_S=str(HEARTBEAT_S)),
        )
        wait_held()
        victim = query(
            database_url,
            "SELECT id, parent_sync_job_id FROM chunked_sync_jobs"
            " WHERE kind = 'delta' AND status = 'processing'",
        )[0]
        sync.send_signal(signal.SIGKILL)
        sync.wait(10)
        served_before_resume = simulator.stats.delta_pages - pages_before
    committed = query(
        database_url, "SELECT checkpoint_data FROM chunked_sync_jobs WHERE id = %s", victim["id"]
    )[0]["checkpoint_data"]
    assert committed["next_link"], "the round's position is committed"
    assert committed["pages"] >= 1

    _wait_until_stuck(database_url, victim["id"])
    result = cleanup(stuck_after_s=STUCK_AFTER_S, retention=False)["jobs_resumed"]

    assert result == 1
    job = query(
        database_url, "SELECT * FROM sync_queue WHERE id = %s", victim["parent_sync_job_id"]
    )[0]
    assert job["status"] == "completed" and job["sync_type"] == "incremental"
    live = query(database_url, "SELECT graph_id, is_read FROM emails WHERE deleted_at IS NULL")
    assert len(live) == len({r["graph_id"] for r in live}) == len(box.ids())
    assert {r["graph_id"] for r in live} == box.ids()
    assert all(r["is_read"] for r in live if r["graph_id"] in set(changed) & box.ids())
    # The whole round is 28-29 pages; the resumed attempt asked only for what was left,
    # plus at most the page in flight when the worker died.
    total = simulator.stats.delta_pages - pages_before
    resumed_pages = total - served_before_resume
    assert resumed_pages <= total - committed["pages"] + 1
    assert resumed_pages < total - 2


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stopped_sync_releases_its_chunk_at_once_and_resumes_exactly(
    runtime: Any, simulator: Any, database_url: str, processes: Processes, stop: signal.Signals
) -> None:
    """SIGTERM (a worker stopping, a flow run cancelled through its worker) or Ctrl-C while
    Graph holds a page: the process gives the chunk back and exits without waiting for that
    page, the chunk is claimable again at once, its attempt not counted; the job resumes
    from the last committed page and ends exact."""
    from mailsync.flows.sync_mailbox import sync_mailbox

    box = simulator.add_mailbox(MAILBOX, 1500, seed=43)
    with holding(simulator.faults, MID_CHUNK_PAGES) as wait_held:
        sync = processes.start(
            "sync",
            [
                str(BIN_DIR / "mailsync"),
                "sync",
                "--mailbox",
                MAILBOX,
                "--folder",
                "inbox",
                "--graph-url",
                simulator.url,
                "--chunk-size",
                "500",
                "--page-size",
                "50",
                "--json",
            ],
            child_env(),
        )
        wait_held()
        victim = _part_way(database_url)
        sync.send_signal(stop)
        # The page is still held (for 120 s): the stop wakes the attempt's wait, the chunk
        # is given back and the process exits, leaving the request behind. The chunk is
        # claimable at once, not after the stuck threshold (30 s by default).
        sync.wait(30)
    row = query(
        database_url,
        "SELECT status, attempts, error_category, worker_id FROM chunked_sync_jobs WHERE id = %s",
        victim["id"],
    )[0]
    assert sync.returncode != 0
    assert row == {
        "status": "pending",
        "attempts": 0,
        "error_category": "cancelled",
        "worker_id": None,
    }, row

    resumed = sync_mailbox(job_id=str(victim["parent_sync_job_id"]), graph_url=simulator.url)
    assert resumed["status"] == "completed"
    ids = [r["graph_id"] for r in query(database_url, "SELECT graph_id FROM emails")]
    assert len(ids) == len(set(ids)) == 1500 and set(ids) == box.ids()
    attempts = query(
        database_url, "SELECT attempts FROM chunked_sync_jobs WHERE id = %s", victim["id"]
    )[0]["attempts"]
    assert attempts == 1  # the stopped attempt did not count
