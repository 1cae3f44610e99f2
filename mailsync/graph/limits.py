"""Graph's limits, held by every worker at once: a slot per request, taken in Postgres.

Outlook allows an app, per mailbox, 4 requests in flight and 10,000 requests in any 10
minutes, and a 429 on one mailbox says nothing about another (research notes §5). mailsync
runs many mailboxes in many processes on many machines, so the limits are held where all
of them meet: before every Graph request, the HTTP transport below takes a slot of the
mailbox's limit and of the app's (a ceiling of our own, ``MAILSYNC_GRAPH_APP_*``) in one
statement (``acquire_graph_slot``, migrations 0007 and 0019), and frees it when the answer
is read. A slot needs a free in-flight lease and room in the limit's window of requests; a
429 with Retry-After pauses that mailbox's limit for every worker, and no other.

Why Postgres and not Prefect's global concurrency limits, which do the same job (a
``concurrency()`` slot and a ``rate_limit()`` token per limit):
- every worker already talks to Postgres on every page (its commit), and one statement
  both checks and takes; with Prefect it is an acquire, a release and a rate-limit call
  per request, each an API round trip (Prefect Cloud counts them against its API rate
  limits: 8 mailboxes at Graph's pace are ~400 calls a second);
- a Prefect limit has no "paused until", which is what Retry-After asks for;
- a holder that dies frees its slot when its lease ends: here after the HTTP timeout plus
  30 s, with Prefect after at least 60 s;
- the limits exist because mailsync creates them, from its settings, in the statement that
  uses them: a missing limit cannot silently mean "unthrottled" (what Prefect's
  ``strict=False`` does).
What it costs: two short statements per Graph request on tables that are UNLOGGED (no WAL
flush at commit), each one round trip (its transaction pipelined with it); the app's row is
locked by every acquire for well under a millisecond. Threads of one process wait for a
mailbox's in-flight slot in the process (``LocalSlots``), not by asking Postgres again and
again: only another process's requests can make a worker poll.

The budget of ``N`` requests in ``W`` seconds is a sliding window of ``W + 2`` seconds (2 s
of headroom for a request taken at one moment and arriving at Graph later), counted in
slices of a sixtieth of it: any ``N`` requests go at once, and a mailbox that has sent ``N``
waits until its oldest leave the window. It was a token bucket of ``N // 50`` tokens
refilled to stay under ``N``: that paced every mailbox at 16 requests a second after its
first 200, however few it needed in all (a first sync's attachments, docs/attachments.md).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote
from uuid import UUID

import httpx

from mailsync.config import Settings
from mailsync.errors import ThrottledError
from mailsync.store.db import Database

ARRIVAL_HEADROOM_S = 2.0  # a slot taken now may reach Graph this much later
POLL_S = (0.01, 0.5)  # waiting for a free in-flight slot: from 10 ms, doubling, to 0.5 s
LEASE_GRACE_S = 30.0  # a lease outlives the HTTP timeout by this much
MAX_WAIT_S = 900.0  # longer than this without a slot: the request fails as throttled
BATCH_PARALLEL = 4  # Outlook runs up to 4 items of an unordered $batch at a time
WINDOW_SLICES = 60  # a window is counted in this many slices (at most 61 rows a limit)


@dataclass(frozen=True)
class Limit:
    """One shared limit: ``max_in_flight`` leases, ``requests`` in any ``window_s``."""

    key: str
    max_in_flight: int
    requests: int
    window_s: float

    def as_json(self) -> dict[str, Any]:
        span = self.window_s + ARRIVAL_HEADROOM_S
        return {
            "key": self.key,
            "max_in_flight": self.max_in_flight,
            "budget": max(1, self.requests),
            "span_s": span,
            "slice_s": span / WINDOW_SLICES,
        }


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


class LocalSlots:
    """The in-flight slots of each mailbox limit, within this process: a thread waits here
    for one of its own process's requests to end (woken when it does), then asks Postgres,
    which also counts every other worker's. Without it, N threads of one process over a
    limit of 4 polled Postgres (from 10 ms, doubling), each poll a transaction."""

    def __init__(self) -> None:
        self._free = threading.Condition()
        self._used: dict[str, int] = {}

    @contextmanager
    def hold(self, limit: Limit, slots: int) -> Iterator[None]:
        slots = min(slots, limit.max_in_flight)
        with self._free:
            self._free.wait_for(lambda: self._used.get(limit.key, 0) + slots <= limit.max_in_flight)
            self._used[limit.key] = self._used.get(limit.key, 0) + slots
        try:
            yield
        finally:
            with self._free:
                self._used[limit.key] -= slots
                if not self._used[limit.key]:
                    del self._used[limit.key]
                self._free.notify_all()


class GraphLimiter:
    """Slots of the shared limits of one app (client id) in one tenant."""

    def __init__(
        self,
        db: Callable[[], Database],
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._settings = settings
        self._sleep = sleep
        self._app = f"{settings.tenant_id or ''}\x00{settings.client_id or ''}"
        self.app_limit = Limit(
            f"app:{_digest(settings.client_id or '')}",
            settings.graph_app_concurrency,
            settings.graph_app_requests,
            settings.graph_app_window_s,
        )
        self.lease_s = settings.http_timeout_s + LEASE_GRACE_S
        self.waited_s = 0.0  # time this process spent waiting for slots
        self.local = LocalSlots()

    def mailbox_limit(self, mailbox: str) -> Limit:
        """The limit of one mailbox: Graph's is per app and mailbox. The key is a digest, so
        the shared table holds no mailbox names (no tenant data)."""
        s = self._settings
        return Limit(
            f"mailbox:{_digest(self._app, mailbox.lower())}",
            s.graph_mailbox_concurrency,
            s.graph_mailbox_requests,
            s.graph_mailbox_window_s,
        )

    @contextmanager
    def slot(self, mailbox: str | None, items: int = 1) -> Iterator[Slot]:
        """Hold a request slot of the app (and of ``mailbox``, for a mailbox's request);
        a ``$batch`` of ``items`` requests holds as many slots as Graph runs at once
        (up to 4) and takes a token per item (mailsync.graph.batch)."""
        limits = [self.app_limit] + ([self.mailbox_limit(mailbox)] if mailbox else [])
        weight = {"slots": min(items, BATCH_PARALLEL), "tokens": items} if items > 1 else {}
        with ExitStack() as local:
            if mailbox:
                local.enter_context(self.local.hold(limits[-1], weight.get("slots", 1)))
            lease = self._acquire(limits, mailbox, weight)
            try:
                yield Slot(self, limits[-1] if mailbox else None)
            finally:
                self._one_trip("release_graph_slot", lease_id=lease)

    def _acquire(self, limits: list[Limit], mailbox: str | None, weight: dict[str, int]) -> UUID:
        payload = [{**limit.as_json(), **weight} for limit in limits]
        started = time.monotonic()
        poll = POLL_S[0]
        while True:
            row = self._one_trip("acquire_graph_slot", limits=payload, lease_s=self.lease_s)
            assert row is not None
            if row["lease_id"] is not None:
                self.waited_s += time.monotonic() - started
                return UUID(str(row["lease_id"]))
            waited = time.monotonic() - started
            if waited > MAX_WAIT_S:
                raise ThrottledError(
                    f"no Graph request slot for {mailbox or 'the app'} after {waited:.0f} s "
                    f"({row['reason']})"
                )
            if row["wait_s"] > 0:  # a pause, or the window's oldest slice leaving: known
                self._sleep(min(float(row["wait_s"]), POLL_S[1] * 4))
            else:  # in flight: someone frees a slot when their answer arrives
                self._sleep(poll)
                poll = min(poll * 2, POLL_S[1])

    def _one_trip(self, query: str, **params: Any) -> Any:
        """One statement in a transaction of its own, all of it in one round trip (the
        statement's row comes back with the commit): two of these per Graph request."""
        with self._db().pipelined() as session:
            pending = session.send(query, **params)
        return pending.one()

    def pause(self, limit: Limit, seconds: float) -> None:
        self._db().one("pause_graph_limit", key=limit.key, seconds=seconds)


@dataclass
class Slot:
    limiter: GraphLimiter
    mailbox_limit: Limit | None

    def throttled(self, retry_after_s: float | None) -> None:
        """Graph answered 429: with a Retry-After, the mailbox waits that long, for every
        worker (the app's own limit is not paused: another mailbox is not throttled)."""
        if self.mailbox_limit is not None and retry_after_s:
            self.limiter.pause(self.mailbox_limit, retry_after_s)


def mailbox_of(path: str) -> str | None:
    """The mailbox a Graph request is about (``/v1.0/users/{mailbox}/…``), or None (the
    user list, anything else)."""
    segments = [s for s in path.split("/") if s]
    if len(segments) >= 3 and segments[1].lower() == "users":
        return unquote(segments[2]).lower()
    return None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


class LimitedTransport(httpx.BaseTransport):
    """An httpx transport that sends each request only inside a slot of the shared limits,
    and reads the whole answer before the slot is freed (in flight until then)."""

    def __init__(self, inner: httpx.BaseTransport, limiter: GraphLimiter) -> None:
        self._inner = inner
        self.limiter = limiter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(STREAM_EXTENSION):
            return self._streamed(request)
        batch = request.extensions.get("mailsync_batch")  # (mailbox, items): a $batch
        mailbox, items = batch if batch else (mailbox_of(request.url.path), 1)
        with self.limiter.slot(mailbox, items) as slot:
            response = self._inner.handle_request(request)
            try:
                response.read()
            except BaseException:
                response.close()
                raise
            if response.status_code == 429:
                slot.throttled(_retry_after(response))
        return response

    def _streamed(self, request: httpx.Request) -> httpx.Response:
        """A download (an attachment's ``$value``, up to 150 MB): its body is not read
        here, or it would sit whole in memory; the slot stays taken until the caller has
        read or closed the body, so the download still counts as in flight."""
        stack = ExitStack()
        try:
            slot = stack.enter_context(self.limiter.slot(mailbox_of(request.url.path)))
            response = self._inner.handle_request(request)
            if response.status_code != 200:  # an error's body is small: read, as above
                stack.callback(response.close)
                response.read()
                if response.status_code == 429:
                    slot.throttled(_retry_after(response))
                stack.close()
                return response
        except BaseException:
            stack.close()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_SlotStream(response.stream, stack),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


# A request extension: the caller streams the answer's body (GraphClient.download).
STREAM_EXTENSION = "mailsync_stream"


class _SlotStream(httpx.SyncByteStream):
    """A response body that frees its Graph slot when it is closed."""

    def __init__(self, inner: httpx.SyncByteStream, slot: ExitStack) -> None:
        self._inner = inner
        self._slot = slot

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._slot.close()


def graph_transport(settings: Settings, db: Callable[[], Database]) -> httpx.BaseTransport:
    """The transport of the Graph HTTP client: httpx's own inside the shared limits, unless
    MAILSYNC_GRAPH_LIMITS=off. ``db`` (the runtime's pool) is first called at the first
    request. With the limits held here, one process may keep many mailboxes' requests in
    flight (sync-all runs several at once); without them, 4 connections at most, as
    Outlook allows for one mailbox."""
    if not settings.graph_limits:
        return httpx.HTTPTransport(limits=httpx.Limits(max_connections=4))
    connections = max(4, min(settings.graph_app_concurrency, 64))
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=connections))
    return LimitedTransport(inner, GraphLimiter(db, settings))
