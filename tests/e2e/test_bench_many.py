"""`mailsync bench --mailboxes N` runs end to end: sync-all over N mailboxes against N
parallel fetchers. Its timings are not asserted (a shared machine), only that they are
there and sane, and that nothing went over Graph's limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MAILSYNC = Path(sys.executable).parent / "mailsync"


def test_bench_of_many_mailboxes_reports_its_figures_and_no_request_over_the_limits(
    pg_admin_url: str,
) -> None:
    env = {**os.environ, "MAILSYNC_DATABASE_URL": pg_admin_url}
    done = subprocess.run(
        [
            str(MAILSYNC),
            "bench",
            "--mailboxes",
            "3",
            "--messages",
            "600",
            "--page-size",
            "200",
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

    assert (result["mailboxes"], result["messages_total"]) == (3, 1800)
    assert result["floor_requests"] == 3 * 3  # 600 messages in pages of 200, per mailbox
    assert result["ratio"] == pytest.approx(result["sync_s"] / result["floor_s"], rel=0.01)
    assert len(result["mailbox_sync_s"]) == 3 and all(s > 0 for s in result["mailbox_sync_s"])
    assert result["throttled_requests"] == result["over_limit_requests"] == 0
    assert 1 <= result["peak_in_flight_per_mailbox"] <= 4
    assert result["peak_rss_mb"] > 0 and result["msgs_per_s"] > 0
    # The suite's Prefect server is a process of this host: its CPU is counted, and every
    # process's CPU makes the machine's bound, the sync's own (process and Postgres) within it.
    cpu_s = result["cpu_s"]
    assert cpu_s["prefect_server"] > 0 and cpu_s["simulator"] > 0
    assert result["machine_bound_s"] == pytest.approx(
        sum(cpu_s.values()) / result["cores"], abs=0.01
    )
    assert result["machine_bound_s"] > result["cpu_bound_s"] > 0
