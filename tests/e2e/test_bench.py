"""`mailsync bench` runs end to end and reports its figures; the figures themselves are not
asserted (timing on a shared machine is no test), only that they are there and sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MAILSYNC = Path(sys.executable).parent / "mailsync"


def test_bench_reports_every_figure_as_json(pg_admin_url: str) -> None:
    # The session's Prefect server (PREFECT_API_URL, set by conftest) and Postgres: the
    # bench makes a fresh database there and drops it again. Attachments, which `mailsync
    # bench --attachments` measures, were most of its time (not one is counted below).
    env = {**os.environ, "MAILSYNC_DATABASE_URL": pg_admin_url, "MAILSYNC_ATTACHMENTS": "none"}
    done = subprocess.run(
        [
            *(str(MAILSYNC), "bench", "--messages", "1000", "--chunk-size", "500"),
            *("--one-folder", "--json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # the folder's first delta round, in two chunks (mailsync/sync/rounds.py)
    assert result["messages"] == 1000 and result["chunks"] == 2
    for key in (
        "floor_s",
        "sync_s",
        "ratio",
        "msgs_per_s",
        "floor_msgs_per_s",
        "peak_rss_mb",
        "per_chunk_overhead_ms",
        "startup_s",
        "fetch_wait_s",
        "write_s",
    ):
        assert isinstance(result[key], int | float), key
    assert result["floor_s"] > 0 and result["sync_s"] > 0
    # ratio is computed before the times are rounded to the millisecond: allow for that
    sync_s, floor_s = result["sync_s"], result["floor_s"]
    assert (
        (sync_s - 0.0005) / (floor_s + 0.0005)
        <= result["ratio"]
        <= (sync_s + 0.0005) / (floor_s - 0.0005)
    )
    assert result["peak_rss_mb"] >= result["baseline_rss_mb"] > 0
    assert result["startup_s"] >= result["process_start_s"] > 0
    assert result["floor_requests"] == 2  # 1000 messages in pages of 500
    # the folder (its totalItemCount sizes the plan: no $count), the same 2 pages (the
    # folder's first delta round: each message read once), and the round's catch-up
    assert result["api_calls"] == 4


def test_bench_incremental_reports_what_keeping_a_mailbox_current_costs(pg_admin_url: str) -> None:
    # The delta requests only: an added message's attachments cost requests of their own
    # (listing, $value), which `mailsync bench --attachments` measures.
    env = {**os.environ, "MAILSYNC_DATABASE_URL": pg_admin_url, "MAILSYNC_ATTACHMENTS": "none"}
    done = subprocess.run(
        [
            str(MAILSYNC),
            "bench",
            "--incremental",
            "--messages",
            "1200",
            "--changes",
            "40",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["exact"] is True  # live rows == the mailbox after the incremental syncs
    assert (result["incremental_added"], result["incremental_deleted"]) == (10, 10)
    assert result["incremental_updated"] >= 10  # moves and reads (a message may get both)
    # nothing changed: the folder delta and one $batch of every folder's round
    assert result["no_change_requests"] <= 3
    # 40 changes fit in a page a folder: each changed folder's round came in the batch and
    # was handed to its chunk, which asked nothing more
    assert result["incremental_requests"] == result["no_change_requests"]
    assert result["full_requests"] > result["incremental_requests"]


def test_bench_tenant_reports_three_cycles(pg_admin_url: str) -> None:
    env = {**os.environ, "MAILSYNC_DATABASE_URL": pg_admin_url, "MAILSYNC_ATTACHMENTS": "none"}
    command = ("bench", "--tenant", "--mailboxes", "4", "--messages", "30", "--json")
    done = subprocess.run(
        [str(MAILSYNC), *command], env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    first, unchanged, changed = result["first"], result["no_change"], result["changed"]
    assert result["changed_mailboxes"] == 1
    assert unchanged["graph_requests_per_mailbox"] <= 3
    assert unchanged["by_kind"].get("delta", 0) == 0  # every round asked in the batches
    # The changed mailbox's 5 new messages came in its batch: no request more than a cycle
    # with no change (a chunk for Inbox, not asked again)
    assert unchanged["graph_requests"] == changed["graph_requests"] < first["graph_requests"]
    for cycle in (first, unchanged, changed):
        assert cycle["wall_s"] > 0 and cycle["cpu_ms_per_mailbox"] > 0
