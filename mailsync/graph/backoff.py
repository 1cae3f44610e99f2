"""How long to wait before trying again: the one backoff formula of mailsync.

Two layers use it (docs/design.md, "Retries"): the Graph client between the in-request retries of
one HTTP request (429, 5xx, timeouts), and a failed chunk attempt, whose delay is stored in
the chunk row as ``next_attempt_at`` (the row, not Prefect, decides when the next attempt
may start). Graph's ``Retry-After`` always wins over our own guess when it asks for longer.
"""

from __future__ import annotations

import random

_rng = random.Random()


def backoff_delay(
    attempt: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped.

    ``attempt`` counts from 0 (the first retry waits about ``base_s``). The fixed half keeps
    a retry from coming back at once; the random half keeps many workers from retrying in
    step after a shared outage.
    """
    cap = min(max_s, base_s * 2.0**attempt)
    jitter: float = (rng or _rng).uniform(0, cap / 2)
    return cap / 2 + jitter


def retry_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry number ``attempt`` (from 0): our backoff, or Graph's
    ``Retry-After`` when it asks for longer (throttled requests still count against the
    mailbox's budget, so coming back earlier only earns another 429)."""
    delay = backoff_delay(attempt, base_s, max_s, rng)
    return max(delay, retry_after_s) if retry_after_s is not None else delay
