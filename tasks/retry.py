"""Prefect's part in retries: re-enter, nothing more (docs/design.md, "Retries").

A chunk attempt's retry is decided by its chunk row (``fail_chunk_job``: retrying while
attempts are left, with ``next_attempt_at`` from Graph's Retry-After or our backoff) and
the claim waits for that time; so the sync-chunk task retries at once, and only when the
raised error says the row chose to retry. The maintenance tasks (plan, recovery,
retention) are single statements or short batches: a database blink is worth two more
tries, a second and five seconds later.
"""

from __future__ import annotations

from typing import Any

from mailsync.errors import is_retryable


def only_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn: retry a failed run only when its error is retryable (for a chunk
    attempt: when its chunk row is ``retrying``)."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as unreadable:  # the result itself could not be read
            exc = unreadable
    return isinstance(exc, BaseException) and is_retryable(exc)


# Keyword arguments for @task on the maintenance tasks.
MAINTENANCE_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [1, 5],
    "retry_condition_fn": only_retryable,
}
