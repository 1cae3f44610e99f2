"""Fault switches (what the simulator does wrong, and when) and request statistics.

Faults fire on deterministic events, never on wall-clock time: "the next N requests",
"the Nth message page", "after N message pages". A test sets the switch before the sync
starts and knows exactly which request fails, with no thread watching a counter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

# "After N pages" triggers: once N pages were served since the switch was set, the fault
# fires once and the switch reads None again.
MESSAGE_PAGE_TRIGGERS = (
    "throttle_after_pages",
    "server_error_after_pages",
    "expire_tokens_after_pages",
)
_OPTIONAL_COUNTS = {*MESSAGE_PAGE_TRIGGERS, "malformed_page_at"}


@dataclass(frozen=True)
class PageEvents:
    """What counting one message page set off; the caller acts on it."""

    malformed: bool = False  # serve this page cut in half
    expire_tokens: bool = False  # expire every access token once this page is out


@dataclass
class Faults:
    """Fault switches, all off by default; assign fields at run time (or POST /_sim/faults).

    Graph (/v1.0) requests meet them in this order, after the bearer token is checked and the
    user resolved: ``server_error_next``, ``throttle_next``, ``max_concurrent_per_mailbox``;
    then message-list requests only: ``latency_ms``, the page is cut, mutations are counted
    (per mailbox) and applied after the cut, the page is counted. A "page" is a message-list
    request that got that far; a ``$count=true&$top=1`` request is one.

    Counting a page (across all mailboxes, since the switch was last assigned):
    ``malformed_page_at = N`` serves the Nth page cut in half; ``throttle_after_pages = N``
    adds ``throttle_burst`` to ``throttle_next`` once the Nth page is out, so the request
    after it (the (N+1)th page, in a sync that only pages) answers 429;
    ``server_error_after_pages`` does the same with ``server_error_burst`` and
    ``server_error_next``; ``expire_tokens_after_pages = N`` expires every access token once
    the Nth page is out. ``token_lifetime_s`` and ``token_error_next`` concern the token
    endpoint only. Reassigning a counted switch restarts its count.
    """

    latency_ms: float = 0.0
    throttle_next: int = 0
    throttle_after_pages: int | None = None
    throttle_burst: int = 1
    retry_after_s: float = 1.0
    server_error_next: int = 0
    server_error_after_pages: int | None = None
    server_error_burst: int = 1
    server_error_status: int = 503
    malformed_page_at: int | None = None
    malformed_persistent: bool = False
    token_lifetime_s: int = 3600
    token_error_next: int = 0  # token endpoint answers 503 (the only token-endpoint fault)
    expire_tokens_after_pages: int | None = None
    mutate_every_pages: int = 0
    add_per_mutation: int = 0
    delete_per_mutation: int = 0
    max_concurrent_per_mailbox: int = 4  # 0 = unlimited
    # Run-time state, not switches:
    mutation_epoch: int = field(default=0, init=False, repr=False, compare=False)
    _pages_seen: int = field(default=0, init=False, repr=False, compare=False)
    _malformed_keys: set[tuple[Any, ...]] = field(
        default_factory=set, init=False, repr=False, compare=False
    )
    _trigger_pages: dict[str, int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OPTIONAL_COUNTS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"fault {name!r} must be None or a count >= 1, not {value!r}")
        super().__setattr__(name, value)
        # "Since the fault was set": (re)assigning a counted fault restarts its count.
        if name == "malformed_page_at":
            super().__setattr__("_pages_seen", 0)
            super().__setattr__("_malformed_keys", set())
        elif name == "mutate_every_pages":
            super().__setattr__("mutation_epoch", getattr(self, "mutation_epoch", 0) + 1)
        elif name in MESSAGE_PAGE_TRIGGERS and "_trigger_pages" in self.__dict__:
            self._trigger_pages[name] = 0

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def update(self, changes: dict[str, Any]) -> None:
        """Set several fields, type-checked (the admin endpoint takes untrusted JSON)."""
        coerced = {name: coerce_fault(name, value) for name, value in changes.items()}
        for name, value in coerced.items():
            setattr(self, name, value)

    def reset(self) -> None:
        self.update(Faults().as_dict())

    def take_server_error(self) -> int | None:
        with self._lock:
            if self.server_error_next <= 0:
                return None
            self.server_error_next -= 1
            return self.server_error_status

    def take_throttle(self) -> bool:
        with self._lock:
            if self.throttle_next <= 0:
                return False
            self.throttle_next -= 1
            return True

    def take_token_error(self) -> bool:
        with self._lock:
            if self.token_error_next <= 0:
                return False
            self.token_error_next -= 1
            return True

    def count_message_page(self, page_key: tuple[Any, ...]) -> PageEvents:
        """Count one served message page: is it the malformed one, and what does it set off?"""
        with self._lock:
            malformed = self._count_malformed(page_key)
            fired = self._count_triggers(MESSAGE_PAGE_TRIGGERS)
            if "throttle_after_pages" in fired:
                self.throttle_next += self.throttle_burst
            if "server_error_after_pages" in fired:
                self.server_error_next += self.server_error_burst
            return PageEvents(malformed, "expire_tokens_after_pages" in fired)

    def _count_malformed(self, page_key: tuple[Any, ...]) -> bool:
        if self.malformed_page_at is None:
            return False
        self._pages_seen += 1
        if self._pages_seen == self.malformed_page_at:
            self._malformed_keys.add(page_key)
            return True
        return self.malformed_persistent and page_key in self._malformed_keys

    def _count_triggers(self, names: tuple[str, ...]) -> set[str]:
        """Count a page for each armed trigger; disarm and return the ones that fire."""
        fired = set()
        for name in names:
            limit = getattr(self, name)
            if limit is None:
                continue
            seen = self._trigger_pages.get(name, 0) + 1
            self._trigger_pages[name] = seen
            if seen >= limit:
                fired.add(name)
                setattr(self, name, None)
        return fired


def coerce_fault(name: str, value: Any) -> Any:
    """``value`` as the type of fault ``name``; ValueError for unknown names or bad types."""
    defaults = Faults.__dataclass_fields__
    if name not in defaults or not defaults[name].init:
        raise ValueError(f"unknown fault {name!r}")
    default = defaults[name].default
    if name in _OPTIONAL_COUNTS and value is None:
        return None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"fault {name!r} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"fault {name!r} must be a number")
    if isinstance(default, float):
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"fault {name!r} must be an integer")
    return int(value)


class Stats:
    """Request counters (admin requests under /_sim are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_status: dict[int, int] = {}
            self.token_requests = 0
            self.data_requests = 0  # every /v1.0 request
            self.message_pages = 0  # message-list responses actually served (incl. malformed)
            self.messages_served = 0
            self.throttled = 0  # 429s of either kind

    def record(self, status: int, *, token: bool = False, data: bool = False) -> None:
        with self._lock:
            self.total += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.token_requests += token
            self.data_requests += data
            self.throttled += status == 429

    def record_page(self, messages: int) -> None:
        with self._lock:
            self.message_pages += 1
            self.messages_served += messages

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "token_requests": self.token_requests,
                "data_requests": self.data_requests,
                "message_pages": self.message_pages,
                "messages_served": self.messages_served,
                "throttled": self.throttled,
            }
