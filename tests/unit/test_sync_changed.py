"""sync-changed's loop, where it needs no database: a run past its taking time."""

from __future__ import annotations

from mailsync.flows.sync_changed import _sync_while_changing


def test_a_run_that_stopped_taking_claims_no_last_question() -> None:
    # Past max_taking_s the run asks Postgres nothing more: it must not report a last
    # question, or it would cancel queued runs whose changes it never saw.
    outcomes, last_asked = _sync_while_changing(
        "unused", limit=10, debounce_s=0, max_taking_s=0, asks_until=0, overrides={}
    )
    assert outcomes == [] and last_asked is None
