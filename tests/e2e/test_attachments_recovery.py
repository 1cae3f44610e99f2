"""A sync killed (SIGKILL) or stopped (SIGTERM) while it fetches attachments: the resumed
job fetches what was left, exactly, and fetches again at most the attachments that were in
flight."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.sync.attachments import WORKERS
from tests.e2e.helpers import BIN_DIR, Processes, child_env, query
from tests.integration.test_attachments import check_stored_exactly

pytestmark = pytest.mark.e2e

MAILBOX = "killed-attachments@contoso.example"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_sync_killed_while_fetching_attachments_resumes_exactly(
    runtime: Any, simulator: Any, database_url: str, processes: Processes, stop: signal.Signals
) -> None:
    box = simulator.add_mailbox(MAILBOX, 300, seed=41)
    simulator.attachments.hold_values_after = 12  # the 13th download waits: the kill lands
    sync = processes.start(
        "sync",
        [str(BIN_DIR / "mailsync"), "sync", "--mailbox", MAILBOX, "--graph-url", simulator.url],
        child_env(),
    )
    assert simulator.attachments.wait_held(180), processes.log("sync")
    os.killpg(sync.pid, stop)
    # Stopped, it exits with its downloads still held (for 120 s): none is waited for.
    sync.wait(30)
    assert sync.returncode != 0
    simulator.attachments.release_held()  # the held answers go to a dead socket
    job = query(database_url, "SELECT id, status FROM sync_queue")[0]
    assert job["status"] == "running"
    stored_before = query(
        database_url, "SELECT count(*) AS n FROM email_attachments WHERE sha256 IS NOT NULL"
    )[0]["n"]
    assert stored_before >= 12 - WORKERS  # stored before the kill: the resume keeps them

    summary = sync_mailbox(job_id=str(job["id"]), graph_url=simulator.url)

    assert summary["status"] == "completed"
    check_stored_exactly(database_url, box, unavailable=set())
    asked = simulator.attachments.value_requests
    assert max(asked.values()) <= 2
    assert sum(1 for n in asked.values() if n == 2) <= WORKERS  # only those in flight
