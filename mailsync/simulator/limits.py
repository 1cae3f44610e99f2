"""Graph's per-mailbox limits, enforced and counted: what "never over the limits" is checked
against.

Outlook allows an app, per mailbox, 4 requests in flight and 10,000 requests in any 10
minutes; a request over either gets a 429 with Retry-After, and other mailboxes do not
notice (research notes §5). Here, per mailbox:

- ``max_concurrent_per_mailbox`` (Faults, 0 = unlimited): the request that would be the
  5th in flight answers 429 ``ApplicationThrottled`` (Retry-After ``retry_after_s``);
- ``mailbox_budget_requests`` in any ``mailbox_budget_window_s`` (Faults, 0 = unlimited),
  a sliding window of the requests let through: the one over it answers 429 with the
  seconds until the oldest leaves the window;
- ``storm(user, status, count)``: that mailbox's next ``count`` requests answer ``status``
  (429 with Retry-After, or a 5xx), a fault of one mailbox only.

Every mailbox's usage is counted (``usage(user)``, ``as_dict()``, ``GET /_sim/limits``):
requests let through, the peak in flight, and each kind of refusal.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mailsync.simulator.faults import Faults
from mailsync.simulator.wire import GraphFailure, format_seconds

_SERVER_CODES = {
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass
class Storm:
    status: int
    left: int
    retry_after_s: float


@dataclass
class Usage:
    """One mailbox's counters (and its sliding window of admitted requests)."""

    requests: int = 0  # let through to the mail API
    in_flight: int = 0
    peak_in_flight: int = 0  # the most ever in flight at once, refused arrivals included
    over_concurrency: int = 0  # 429: would have been over max_concurrent_per_mailbox
    over_budget: int = 0  # 429: would have been over the budget in its window
    storm_answers: int = 0  # answered by a storm
    window: deque[float] = field(default_factory=deque, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "over_concurrency": self.over_concurrency,
            "over_budget": self.over_budget,
            "storm_answers": self.storm_answers,
        }


class MailboxLimits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, Usage] = {}
        self._storms: dict[str, Storm] = {}

    @contextmanager
    def slot(self, mailbox: str, faults: Faults) -> Iterator[None]:
        """Hold one of the mailbox's request slots while its request is answered, or raise
        the 429 (or storm) Graph would answer instead."""
        key = mailbox.lower()
        with self._lock:
            usage = self._usage.setdefault(key, Usage())
            self._take_storm(key, usage)
            usage.in_flight += 1
            usage.peak_in_flight = max(usage.peak_in_flight, usage.in_flight)
            try:
                self._admit(usage, faults)
            except GraphFailure:
                usage.in_flight -= 1
                raise
        try:
            yield
        finally:
            with self._lock:
                usage.in_flight -= 1

    def _take_storm(self, key: str, usage: Usage) -> None:
        storm = self._storms.get(key)
        if storm is None or storm.left <= 0:
            return
        storm.left -= 1
        usage.storm_answers += 1
        if storm.status == 429:
            raise GraphFailure(
                429,
                "TooManyRequests",
                "Please retry again later.",
                {"Retry-After": format_seconds(storm.retry_after_s)},
            )
        code = _SERVER_CODES.get(storm.status, "UnknownError")
        raise GraphFailure(storm.status, code, "The service is temporarily unavailable.")

    def _admit(self, usage: Usage, faults: Faults) -> None:
        limit = faults.max_concurrent_per_mailbox
        if limit > 0 and usage.in_flight > limit:
            usage.over_concurrency += 1
            raise GraphFailure(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": format_seconds(faults.retry_after_s)},
            )
        budget, window_s = faults.mailbox_budget_requests, faults.mailbox_budget_window_s
        now = self._clock()
        window = usage.window
        while window and window[0] <= now - window_s:
            window.popleft()
        if budget > 0 and len(window) >= budget:
            usage.over_budget += 1
            wait = max(1, math.ceil(window[0] + window_s - now))
            raise GraphFailure(
                429,
                "ApplicationThrottled",
                f"Application is over its limit of {budget} requests in {window_s:g} s for "
                "this mailbox.",
                {"Retry-After": str(wait)},
            )
        window.append(now)
        usage.requests += 1

    def storm(
        self, mailbox: str, status: int = 429, count: int = 1, retry_after_s: float = 1.0
    ) -> None:
        """The mailbox's next ``count`` requests answer ``status`` (429 or 5xx)."""
        if status != 429 and status < 500:
            raise ValueError(f"a storm answers 429 or a 5xx, not {status}")
        with self._lock:
            self._storms[mailbox.lower()] = Storm(status, count, retry_after_s)

    def usage(self, mailbox: str) -> dict[str, int]:
        with self._lock:
            return self._usage.get(mailbox.lower(), Usage()).as_dict()

    def as_dict(self) -> dict[str, Any]:
        """Every mailbox's counters, and the totals and peaks over all of them."""
        with self._lock:
            mailboxes = {key: usage.as_dict() for key, usage in sorted(self._usage.items())}
        totals = {
            name: sum(m[name] for m in mailboxes.values())
            for name in ("requests", "over_concurrency", "over_budget", "storm_answers")
        }
        totals["peak_in_flight"] = max((m["peak_in_flight"] for m in mailboxes.values()), default=0)
        return {"mailboxes": mailboxes, "totals": totals}

    def reset(self) -> None:
        with self._lock:
            self._usage.clear()
            self._storms.clear()
