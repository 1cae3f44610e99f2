"""Retry policy shared by the tasks: retry only what is retryable, with jittered delays.

Prefect 3.8 ignores ``retry_jitter_factor`` for task retries, so the jitter is ours.
"""

from __future__ import annotations

import random
from typing import Any

from mailsync.config import Settings
from mailsync.errors import is_retryable
from mailsync.graph import backoff_delay


def retry_delays(settings: Settings, retries: int) -> list[float]:
    rng = random.Random()
    return [
        backoff_delay(i, settings.retry_base_s, settings.retry_max_s, rng) for i in range(retries)
    ]


def only_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn: retry a failed attempt only when its error category is retryable."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as unreadable:  # the result itself could not be read
            exc = unreadable
    return isinstance(exc, BaseException) and is_retryable(exc)
