"""`mailsync demo` (the README's first command) on a small mailbox: the default folder tree
synced whole, then changed and synced again, its rows equal to the mailbox's."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from mailsync.cli import app


def test_the_demo_syncs_a_folder_tree_then_only_its_changes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MAILSYNC_TENANT_ID", "MAILSYNC_CLIENT_ID", "MAILSYNC_CLIENT_SECRET"):
        monkeypatch.setenv(name, "")  # the demo sets them; restored after the test
    args = ["demo", "--messages", "300", "--changes", "12", "--chunk-size", "100"]
    result = CliRunner().invoke(app, [*args, "--attachments", "none", "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["status"], summary["sync_type"], summary["emails_stored"]) == (
        "completed",
        "full",
        300,
    )
    assert len(summary["folders"]) > 5  # the default tree, not one folder
    rerun = summary["rerun"]
    # 12 changes: 3 new, 3 deleted, 3 moved, 3 read; only they are read again.
    assert (rerun["status"], rerun["sync_type"]) == ("completed", "incremental")
    assert (rerun["emails_added"], rerun["emails_deleted"]) == (3, 3)
    assert rerun["emails_in_mailbox"] == rerun["emails_stored"] == 300 and rerun["equal"]
    with psycopg.connect(database_url) as conn:
        live, deleted = conn.execute(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL),"
            " count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM emails"
        ).fetchone() or (None, None)
    assert (live, deleted) == (300, 3)
