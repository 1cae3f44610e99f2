"""A worker killed in the middle of a chunk, and two cleanups at once, with real processes.

The sync runs as `mailsync sync` in a subprocess that reaches this test's Graph simulator
over loopback; cleanup runs here (the flow, as `mailsync cleanup` would) or as the CLI.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

from mailsync.flows.cleanup import cleanup
from mailsync.store.maintenance import CLEANUP_LOCK_KEY
from tests.e2e.helpers import BIN_DIR, Processes, child_env, query, run_cli, wait_for

pytestmark = pytest.mark.e2e

MAILBOX = "killed@contoso.example"
HEARTBEAT_S = 0.5
STUCK_AFTER_S = 5.0  # ten missed heartbeats of the killed worker


def _processing_with_progress(url: str) -> dict[str, Any] | None:
    found = query(
        url,
        "SELECT id, parent_sync_job_id, chunk_index, emails_processed, chunk_size"
        "  FROM chunked_sync_jobs WHERE status = 'processing'"
        "   AND emails_processed > 0 AND emails_processed < chunk_size",
    )
    return found[0] if found else None


def _watch_reclaim(url: str, chunk_id: Any, claimed_at: list[float]) -> threading.Thread:
    """Record the moment the chunk is claimed again (its attempt count goes to 2)."""

    def watch() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT attempts FROM chunked_sync_jobs WHERE id = %s", (chunk_id,)
                ).fetchone()
                if row and row[0] >= 2:
                    claimed_at.append(time.monotonic())
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=watch, name="reclaim-watch", daemon=True)
    thread.start()
    return thread


def test_a_sync_killed_mid_chunk_is_recovered_and_completes_exactly(
    runtime: Any, simulator: Any, database_url: str, processes: Processes
) -> None:
    box = simulator.add_mailbox(MAILBOX, 1500, seed=31)
    simulator.faults.latency_ms = 120  # ~1.2 s a chunk of 10 pages: time to kill inside one
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
    victim = wait_for(
        "a chunk in processing with some progress",
        lambda: _processing_with_progress(database_url),
        timeout_s=60,
        every_s=0.02,
    )
    sync.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    sync.wait(10)
    assert sync.returncode == -signal.SIGKILL
    simulator.faults.latency_ms = 0  # the latency was for the kill; the resumed sync needs none
    claimed_at: list[float] = []
    watcher = _watch_reclaim(database_url, victim["id"], claimed_at)

    def recovered() -> dict[str, Any] | None:  # cleanup, as often as a tight schedule would
        result = cleanup(stuck_after_s=STUCK_AFTER_S, retention=False)
        return result if result["stuck_reset"] else None

    result = wait_for("the cleanup to put the chunk back", recovered, timeout_s=60, every_s=0.2)
    watcher.join(30)

    assert claimed_at, "the chunk was never claimed again"
    reclaim_s = claimed_at[0] - killed_at
    print(
        f"\nSIGKILL -> chunk {victim['chunk_index']} claimed again: {reclaim_s:.2f} s "
        f"(stuck after {STUCK_AFTER_S:g} s, heartbeat {HEARTBEAT_S:g} s)"
    )
    assert reclaim_s <= 2 * STUCK_AFTER_S
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
    simulator.faults.latency_ms = 150
    pages_before = simulator.stats.delta_pages
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

    def round_under_way() -> dict[str, Any] | None:
        found = query(
            database_url,
            "SELECT id, parent_sync_job_id, checkpoint_data"
            " FROM chunked_sync_jobs WHERE kind = 'delta' AND status = 'processing'"
            "  AND (checkpoint_data ->> 'pages')::int >= 3",
        )
        return found[0] if found else None

    victim = wait_for("a delta round three pages in", round_under_way, timeout_s=60, every_s=0.02)
    sync.send_signal(signal.SIGKILL)
    sync.wait(10)
    committed = query(
        database_url, "SELECT checkpoint_data FROM chunked_sync_jobs WHERE id = %s", victim["id"]
    )[0]["checkpoint_data"]
    assert committed["next_link"], "the round's position is committed"
    simulator.faults.latency_ms = 0
    served_before_resume = simulator.stats.delta_pages - pages_before

    result = wait_for(
        "the cleanup to resume the job",
        lambda: cleanup(stuck_after_s=STUCK_AFTER_S, retention=False)["jobs_resumed"],
        timeout_s=60,
        every_s=0.2,
    )

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
    """SIGTERM (a worker stopping, a flow run cancelled through its worker) or Ctrl-C: the
    chunk is claimable again at once, its attempt not counted; the job resumes from the last
    committed page and ends exact."""
    from mailsync.flows.sync_mailbox import sync_mailbox

    box = simulator.add_mailbox(MAILBOX, 1500, seed=43)
    simulator.faults.latency_ms = 120
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
    victim = wait_for(
        "a chunk in processing with some progress",
        lambda: _processing_with_progress(database_url),
        timeout_s=60,
        every_s=0.02,
    )
    sync.send_signal(stop)
    stopped_at = time.monotonic()

    def released() -> dict[str, Any] | None:
        row = query(
            database_url,
            "SELECT status, attempts, error_category, worker_id"
            " FROM chunked_sync_jobs WHERE id = %s",
            victim["id"],
        )[0]
        return row if row["status"] == "pending" else None

    row = wait_for("the chunk to be released", released, timeout_s=30, every_s=0.01)
    release_s = time.monotonic() - stopped_at
    print(f"\n{stop.name} -> chunk {victim['chunk_index']} claimable again: {release_s:.3f} s")
    sync.wait(30)
    assert sync.returncode != 0
    assert (row["attempts"], row["error_category"], row["worker_id"]) == (0, "cancelled", None)
    assert release_s < 5  # not the stuck threshold (30 s by default)

    simulator.faults.latency_ms = 0
    resumed = sync_mailbox(job_id=str(victim["parent_sync_job_id"]), graph_url=simulator.url)
    assert resumed["status"] == "completed"
    ids = [r["graph_id"] for r in query(database_url, "SELECT graph_id FROM emails")]
    assert len(ids) == len(set(ids)) == 1500 and set(ids) == box.ids()
    attempts = query(
        database_url, "SELECT attempts FROM chunked_sync_jobs WHERE id = %s", victim["id"]
    )[0]["attempts"]
    assert attempts == 1  # the stopped attempt did not count
