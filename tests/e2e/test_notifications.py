"""Change notifications end to end: a Prefect server (the session's), the sync-changed
deployment from prefect.yaml with its trigger and concurrency limit on a process pool, a
real `prefect worker` process, the receiver and the relay, the simulator delivering Graph's
notifications, and Postgres. Driven by the bench's own code (mailsync.bench.notifications),
which checks the rows against every mailbox, at the bench's own size (`mailsync bench
--notifications --mailboxes 20 --changes 200`)."""

from __future__ import annotations

from typing import Any

import pytest

from mailsync.bench.notifications import NotificationsConfig, run_bench_notifications
from mailsync.flows.sync_mailbox import sync_mailbox

# It deploys and deletes sync-mailbox/hourly from prefect.yaml: it takes turns with the other
# modules that deploy, serve or run those deployments (a lock: tests/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("prefect-yaml")]

ENV = (
    "MAILSYNC_DATABASE_URL",
    "MAILSYNC_TENANT_ID",
    "MAILSYNC_CLIENT_ID",
    "MAILSYNC_CLIENT_SECRET",
    "MAILSYNC_GRAPH_URL",
)


def run(monkeypatch: pytest.MonkeyPatch, pg_admin_url: str, **config: Any) -> dict[str, Any]:
    for name in ENV:  # the bench sets these; restored when the test ends
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", pg_admin_url)
    return run_bench_notifications(NotificationsConfig(**config), sync_mailbox)


def test_200_changes_over_20_mailboxes_land_exactly_one_sync_per_burst(
    monkeypatch: pytest.MonkeyPatch, pg_admin_url: str, prefect_api_url: str
) -> None:
    # Issue 24's size: 20 bursts of 10 new messages, one per mailbox, 0.5 s apart. A burst
    # of 100 for one mailbox is tests/integration/test_notifications_changed.py's.
    result = run(monkeypatch, pg_admin_url, mailboxes=20, changes=200, timeout_s=240)
    assert result["exact"], result  # every mailbox's rows equal the mailbox
    assert result["landed"] == 200 and result["notifications"] >= 200
    assert result["syncs_per_burst"] == {"min": 1, "max": 1, "total": 20}, result
