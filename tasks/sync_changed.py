"""Which mailboxes of a business changed: the question sync-changed asks Postgres.

Not a Prefect task: the flow asks it about every second while it runs (a task run each time
would be hundreds of runs of nothing). One statement, read-only (``changed_mailboxes``,
sql/notifications.sql); two runs asking at once may both see a mailbox, and the job's
one-active-job-per-mailbox rule lets only one of them sync it (the other is ``skipped``).
"""

from __future__ import annotations

from typing import Any

from mailsync.runtime import get_runtime

Change = dict[str, Any]  # store_id, business_id, mailbox, folder, first_at, ready


def changed_mailboxes(business_id: str, limit: int, debounce_s: float) -> list[Change]:
    """Up to ``limit`` mailboxes with a change no job started after, oldest change first;
    ``ready``: its first notification is ``debounce_s`` old (the rest of its burst is in)."""
    rows = get_runtime().db.all(
        "changed_mailboxes",
        business_id,
        business_id=business_id,
        limit=limit,
        debounce_s=debounce_s,
    )
    return [
        {**row, "store_id": str(row["store_id"]), "business_id": str(row["business_id"])}
        for row in rows
    ]
