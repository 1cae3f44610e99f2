"""Fault switches: what the simulator does wrong, and when.

Faults fire on deterministic events, never on wall-clock time: "the next N requests",
"the Nth message page", "after N delta pages". A test sets the switch before the sync
starts and knows exactly which request fails, with no thread watching a counter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

from mailsync.simulator.mutations import Mutation, parse_mutations

# Page triggers: once N pages were served since the switch was set, the fault fires once
# and the switch reads None again. The message-page triggers count every page of messages
# (listed or delta); the delta triggers count delta pages only.
MESSAGE_PAGE_TRIGGERS = (
    "throttle_after_pages",
    "server_error_after_pages",
    "expire_tokens_after_pages",
)
DELTA_PAGE_TRIGGERS = (
    "malformed_delta_page_at",
    "untimed_message_in_delta_page_at",
    "expire_delta_tokens_after_pages",
    "mutate_after_delta_pages",
)
_OPTIONAL_COUNTS = {*MESSAGE_PAGE_TRIGGERS, *DELTA_PAGE_TRIGGERS, "malformed_page_at"}
# What Graph (or a peer's reading of it) answers for a delta token it no longer honours;
# research notes §1. The HTTP status is 410 Gone for all of them.
SYNC_STATE_CODES = ("SyncStateNotFound", "syncStateNotFound", "resyncRequired", "SyncStateInvalid")


@dataclass(frozen=True)
class PageEvents:
    """What counting one message page set off; the caller acts on it."""

    malformed: bool = False  # serve this page cut in half
    expire_tokens: bool = False  # expire every access token once this page is out


@dataclass(frozen=True)
class DeltaPageEvents:
    """What counting one delta page set off; the caller acts on it."""

    malformed: bool = False  # serve this page cut in half
    untimed_message: bool = False  # serve this page's first message without its time
    expire_delta_tokens: bool = False  # every delta/skip token dies once this page is out
    mutations: tuple[Mutation, ...] = ()  # apply to this page's mailbox once it is out


@dataclass
class Faults:
    """Fault switches, all off by default; assign fields at run time (or POST /_sim/faults).

    Graph (/v1.0) requests meet them in this order, after the bearer token is checked and the
    user resolved: ``server_error_next``, ``throttle_next``, ``max_concurrent_per_mailbox``;
    then pages of messages only (message-list and delta requests): ``latency_ms``, the page
    is cut, mutations are counted (per mailbox) and applied after the cut, the page is
    counted. A "page" is such a request that got that far; a ``$count=true&$top=1`` request
    is one.

    Counting a page (across all mailboxes, since the switch was last assigned):
    ``malformed_page_at = N`` serves the Nth page cut in half; ``throttle_after_pages = N``
    adds ``throttle_burst`` to ``throttle_next`` once the Nth page is out, so the request
    after it (the (N+1)th page, in a sync that only pages) answers 429;
    ``server_error_after_pages`` does the same with ``server_error_burst`` and
    ``server_error_next``; ``expire_tokens_after_pages = N`` expires every access token once
    the Nth page is out; ``mutate_every_pages = N`` mutates the listed mailbox after every
    Nth of its pages. ``token_lifetime_s`` and ``token_error_next`` concern the token
    endpoint only. Reassigning a counted switch restarts its count.

    Delta requests (``.../messages/delta``) meet, after the common ones: 403
    ``ErrorQuotaExceeded`` while ``delta_quota_exceeded`` (ordinary listings keep working);
    410 ``delta_expired_code`` for a token minted before the tokens were expired. Counting
    delta pages: ``malformed_delta_page_at = N`` serves the Nth cut in half;
    ``untimed_message_in_delta_page_at = N`` serves the Nth's first message without its
    ``receivedDateTime`` (valid JSON, one message off the shape we store);
    ``expire_delta_tokens_after_pages = N`` expires every delta and skip token once the Nth
    is out (its own link is dead then); ``mutate_after_delta_pages = N`` applies
    ``delta_mutations`` (``mailsync.simulator.mutations`` JSON) to that page's mailbox once
    the Nth is out. ``latency_ms`` applies to delta pages too. ``delta_rendezvous = N``
    holds every delta request until N mailboxes have each sent one (at most
    ``rendezvous_timeout_s``): syncs of N mailboxes that run in parallel then overlap for
    certain, and serial ones wait out the timeout.

    ``hold_after_pages = N`` holds every page request (listed or delta) after the Nth since
    the switch was set, before it is answered, until ``release_held()`` (``POST
    /_sim/hold/release``) or ``hold_timeout_s``. ``wait_held()`` (``POST /_sim/hold/wait``)
    returns once a request is held: a test kills, stops or restarts at that event, with a
    request known to be on the wire, instead of watching the database for "part-way".
    ``hold_after_pages = 0`` holds the very first page.
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
    # Graph's request budget per mailbox (mailsync.simulator.limits); 0 = unlimited.
    mailbox_budget_requests: int = 10_000
    mailbox_budget_window_s: float = 600.0
    delta_quota_exceeded: bool = False
    delta_expired_code: str = SYNC_STATE_CODES[0]
    malformed_delta_page_at: int | None = None
    untimed_message_in_delta_page_at: int | None = None
    expire_delta_tokens_after_pages: int | None = None
    mutate_after_delta_pages: int | None = None
    delta_mutations: list[dict[str, Any]] = field(default_factory=list)
    delta_rendezvous: int = 0
    rendezvous_timeout_s: float = 30.0
    hold_after_pages: int | None = None
    hold_timeout_s: float = 120.0
    # Run-time state, not switches:
    _mutation_pages: dict[str, int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
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
    _met: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _met_changed: threading.Condition = field(
        default_factory=threading.Condition, init=False, repr=False, compare=False
    )

    _hold_seen: int = field(default=0, init=False, repr=False, compare=False)
    _held_now: int = field(default=0, init=False, repr=False, compare=False)
    _hold_changed: threading.Condition = field(
        default_factory=threading.Condition, init=False, repr=False, compare=False
    )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, _checked(name, value))
        # "Since the fault was set": (re)assigning a counted fault restarts its count.
        if name == "malformed_page_at":
            super().__setattr__("_pages_seen", 0)
            super().__setattr__("_malformed_keys", set())
        elif name == "mutate_every_pages":
            super().__setattr__("_mutation_pages", {})
        elif name == "delta_rendezvous" and "_met" in self.__dict__:
            self._met.clear()
        elif name == "hold_after_pages" and "_hold_changed" in self.__dict__:
            with self._hold_changed:
                super().__setattr__("_hold_seen", 0)
                self._hold_changed.notify_all()  # None releases whatever is held
        elif name in _OPTIONAL_COUNTS and "_trigger_pages" in self.__dict__:
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

    def mutation_due(self, mailbox_key: str) -> bool:
        """Count one page of a mailbox; True on every ``mutate_every_pages``-th."""
        with self._lock:
            every = self.mutate_every_pages
            if every <= 0:
                return False
            seen = self._mutation_pages.get(mailbox_key, 0) + 1
            self._mutation_pages[mailbox_key] = 0 if seen >= every else seen
            return seen >= every

    def rendezvous(self, mailbox_key: str) -> None:
        """Hold a delta request of this mailbox until ``delta_rendezvous`` mailboxes have
        sent one, or ``rendezvous_timeout_s`` has passed."""
        with self._met_changed:
            self._met.add(mailbox_key)
            self._met_changed.notify_all()
            self._met_changed.wait_for(
                lambda: len(self._met) >= self.delta_rendezvous, self.rendezvous_timeout_s
            )

    def hold_point(self) -> None:
        """Where a page request waits while ``hold_after_pages`` holds it."""
        with self._hold_changed:
            if self.hold_after_pages is None:
                return
            self._hold_seen += 1
            if self._hold_seen <= self.hold_after_pages:
                return
            self._held_now += 1
            self._hold_changed.notify_all()
            try:
                self._hold_changed.wait_for(
                    lambda: self.hold_after_pages is None, self.hold_timeout_s
                )
            finally:
                self._held_now -= 1

    def wait_held(self, timeout_s: float, count: int = 1) -> bool:
        """Block until ``count`` page requests are held at once (True), or ``timeout_s``
        passed (False)."""
        with self._hold_changed:
            return self._hold_changed.wait_for(lambda: self._held_now >= count, timeout_s)

    def release_held(self) -> None:
        """Answer every held request, and hold no more."""
        self.hold_after_pages = None

    def count_delta_page(self) -> DeltaPageEvents:
        """Count one served delta page: what does it set off?"""
        with self._lock:
            fired = self._count_triggers(DELTA_PAGE_TRIGGERS)
            mutations: tuple[Mutation, ...] = ()
            if "mutate_after_delta_pages" in fired:
                mutations = tuple(parse_mutations(self.delta_mutations))
            return DeltaPageEvents(
                "malformed_delta_page_at" in fired,
                "untimed_message_in_delta_page_at" in fired,
                "expire_delta_tokens_after_pages" in fired,
                mutations,
            )

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


def _checked(name: str, value: Any) -> Any:
    """What every assignment of a switch goes through (in process and over the admin API)."""
    if name in _OPTIONAL_COUNTS and value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fault {name!r} must be None or a count >= 1, not {value!r}")
    if name == "hold_after_pages" and value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"fault {name!r} must be None or a count >= 0, not {value!r}")
    if name == "delta_expired_code" and value not in SYNC_STATE_CODES:
        raise ValueError(f"fault 'delta_expired_code' must be one of {SYNC_STATE_CODES}")
    if name == "delta_mutations":  # checked now, not when it fires mid-sync
        return [mutation.as_json() for mutation in parse_mutations(value)]
    return value


def coerce_fault(name: str, value: Any) -> Any:
    """``value`` as the type of fault ``name``; ValueError for unknown names or bad types."""
    defaults = Faults.__dataclass_fields__
    if name not in defaults or not defaults[name].init:
        raise ValueError(f"unknown fault {name!r}")
    default = defaults[name].default
    if name in (*_OPTIONAL_COUNTS, "hold_after_pages") and value is None:
        return None
    if name == "delta_mutations":
        return _checked(name, value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"fault {name!r} must be a string")
        return _checked(name, value)
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
    return _checked(name, int(value))
