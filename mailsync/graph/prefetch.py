"""Pages requested before they are needed: one prefetcher per process, owned by its runtime.

A delta round is a chain: a page's nextLink is known only once the page has arrived. So
the next page is requested as soon as that link is read off a page's raw bytes, before the
page is parsed (mailsync.graph.delta.early_next_link), from the thread that fetched it; that
thread then parses its page, which overlaps the next request and the writing of the page
before. A round requested ahead this way is a chain, and at most ``depth`` of its pages
wait untaken (in flight, or parsed): the one in flight and the one parsed next, so memory
stays flat however slowly pages are written. A link named while the chain is full is
requested when its taker takes the next page. A keyset listing (``ahead``) is simpler: its
next page is asked while the caller writes this one, one at a time.

A round's end is a link too: the deltaLink of its last page, read off the raw bytes the same
way. What follows the round (``Then``, given by whoever takes its pages: the catch-up round
after a round from scratch, the next folder's first page) is requested at that moment, each
a chain of its own, so the next folder's pages come while this folder's last ones are
written and its chunk ends (mailsync.sync.rounds). Chunks still run, and commit, in order:
only the requests run ahead.

Every request, the first of a round too, runs in one of this object's threads, and the
caller waits for its page with ``wait`` (the runtime's: one that a stop wakes,
mailsync.sync.shutdown.result). So a stop that lands while a Graph request hangs (or
waits out its retries) is seen at once, and the chunk is released without waiting for it;
and the process exits without waiting for it either (mailsync.threads).

When a chunk stops in the middle of a round, the requests on their way stay for whichever
attempt continues the round from the same link: in this process, the next chunk of the
folder, which takes them over instead of asking again. A page requested more than
``max_age_s`` ago is not handed over: it is dropped when it is taken (and asked again) or
when another request is made (another worker took the next chunk, or the job stopped), and
its chain with it; so is the oldest when ``max_pending`` are waiting. ``close`` drops every
request and waits a moment for those on the wire (mailsync.runtime closes it with the
process's resources).

Nothing here writes: a page taken over is written under its taker's claim and fence, like
any page, and its requests (retries included) are counted by its taker's client. A request
nobody takes is counted by nobody. A page fetched a little earlier than needed is as good
as one fetched later: a round's content is fixed when its first page is served, and what
changes meanwhile comes in the next round.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mailsync.graph.client import GraphClient
from mailsync.threads import DaemonThreads

P = TypeVar("P")
Page = Any  # what a fetch returns (mailsync.graph.delta: a parsed DeltaPage)
NextLink = Callable[[str], None]  # called by a fetch with its page's nextLink, read early
Sent = Callable[[], None]  # called by a fetch once its request is on the wire
Params = dict[str, str] | None  # a round's first request has options; its links carry theirs
# What follows a round, requested as soon as its deltaLink is read off its last page: given
# that link and whether that page was the round's opening request (the one with options),
# the first requests of the rounds that come next (mailsync.sync.rounds: the catch-up, the
# next folder's first page). Each is a chain of its own.
Then = Callable[[str, bool], Sequence[tuple[str, Params]]]
Wait = Callable[[Future[Any]], Any]  # a future's result, as the caller may wait for it
Key = tuple[str, int, tuple[tuple[str, str], ...]]
# How long the thread that named a link waits for its request to be on the wire, before it
# parses its own page: a parse holds the GIL for tens of milliseconds (orjson does not let
# it go), and the new request would wait behind it.
SEND_WAIT_S = 0.05
# How long ``close`` waits for the requests on the wire: enough for an answer on its way (its
# Graph slot is then freed at once), not for one that hangs (its slot's lease ends later).
CLOSE_WAIT_S = 1.0


class Fetch(Protocol):
    """A page's request and parse (mailsync.graph.delta.fetch_page), in a prefetch thread."""

    def __call__(
        self,
        graph: GraphClient,
        url: str,
        page_size: int,
        on_next_link: NextLink,
        on_sent: Sent,
        *,
        params: Params = None,
        on_delta_link: NextLink | None = None,
    ) -> Page: ...


class PrefetchClosedError(RuntimeError):
    """A page asked of a prefetcher that was closed (its runtime's resources are gone)."""


@dataclass
class _Chain:
    """One round requested ahead: each page as soon as the one before named its link."""

    graph: GraphClient  # its requests are made by forks of this client
    page_size: int
    fetch: Fetch
    waiting: int = 0  # its requests not yet taken (in flight or parsed)
    deferred: str | None = None  # a link named while ``waiting`` was full
    dropped: bool = False  # nobody took its pages in time: it requests nothing more
    then: Then | None = None  # what its taker wants requested once the round ends
    ended: tuple[str, bool] | None = None  # the deltaLink read, and on the opening page?
    followed: bool = False  # ``then`` was requested


@dataclass
class _Request:
    started: float
    client: GraphClient  # the fork that made it: its requests go to the taker's count
    future: Future[Page]
    chain: _Chain
    sent: threading.Event  # its request is on the wire (or it ended)


def _key(url: str, page_size: int, params: Params) -> Key:
    return url, page_size, tuple(sorted((params or {}).items()))


class PagePrefetch:
    def __init__(
        self,
        max_workers: int = 16,
        max_age_s: float = 60.0,
        max_pending: int = 32,
        depth: int = 2,
        wait: Wait = Future.result,
        name: str = "page-prefetch",
    ) -> None:
        # A thread per request on its way: mailboxes synced in parallel in one process each
        # keep their own round going, ``depth`` requests each.
        self._pool = DaemonThreads(max_workers, name)
        self._lock = threading.Lock()
        self._pending: OrderedDict[Key, _Request] = OrderedDict()
        self._closed = False
        self.max_age_s, self.max_pending, self.depth = max_age_s, max_pending, depth
        self._wait = wait

    def start(
        self, graph: GraphClient, url: str, page_size: int, fetch: Fetch, params: Params = None
    ) -> None:
        """Request the page at ``url`` (a nextLink, replayed exactly; or a round's opening
        request, with its ``params``) now, for a later take, unless it is on its way already:
        ``fetch`` runs in a thread with a fork of ``graph``, and requests the pages after it
        the same way."""
        self._next(_Chain(graph, page_size, fetch), url, params)

    def offer(
        self,
        graph: GraphClient,
        url: str,
        page_size: int,
        fetch: Fetch,
        page: Page,
        delta_link: str | None,
    ) -> None:
        """A page already in hand for whoever asks ``url`` next (a round's first page,
        answered in the plan's ``$batch``: mailsync.sync.planning), taken like a page
        requested ahead, within ``max_age_s``. Nothing more is requested now: its taker asks
        for its nextLink, and what follows the round (``delta_link``: the page ends it) is
        requested once the taker names it."""
        done: Future[Page] = Future()
        done.set_result(page)
        sent = threading.Event()
        sent.set()
        chain = _Chain(graph, page_size, fetch, waiting=1)
        if delta_link is not None:  # the round's only page: its end is known
            chain.ended = (delta_link, False)
        key = _key(url, page_size, None)  # a link carries its options
        with self._lock:
            if self._closed or key in self._pending:
                return
            self._drop_stale()
            # A fork that made no request: the page is charged to nobody (the batch was).
            self._pending[key] = _Request(time.monotonic(), graph.fork(), done, chain, sent)

    def page(
        self,
        graph: GraphClient,
        url: str,
        page_size: int,
        fetch: Fetch,
        params: Params = None,
        *,
        then: Then | None = None,
    ) -> Page:
        """The page at ``url``: the one requested ahead if there is one, else requested now
        (a chain of its own, so the pages after it are requested ahead); waited for as
        ``take`` waits. ``then``: what to request as soon as the round's end is read."""
        page = self.take(graph, url, page_size, params, then=then)
        if page is not None:
            return page
        key = _key(url, page_size, params)
        with self._lock:
            if self._closed:
                raise PrefetchClosedError("the page prefetch is closed")
            # A new chain is neither full nor dropped: the request is made, unless another
            # caller's request for the same page came first (then that one is ours).
            self._request(_Chain(graph, page_size, fetch, then=then), url, params)
            request = self._pending.pop(key)
            request.chain.waiting -= 1
            if request.chain.then is None:
                request.chain.then = then
            follow = self._follow_ups(request.chain)
        self._start_all(request.chain, follow)
        return self._collect(graph, request)

    def take(
        self,
        graph: GraphClient,
        url: str,
        page_size: int,
        params: Params = None,
        *,
        then: Then | None = None,
    ) -> Page | None:
        """The page at ``url`` if it was requested ahead, less than ``max_age_s`` ago
        (waiting for it if need be, in a wait that a stop wakes), its requests now counted
        by ``graph``; None: ask it yourself. ``then`` is kept by the page's chain (a chain
        started ahead learns it from its first taker): requested when the round's end is
        read, or now if it was read already."""
        with self._lock:
            request = self._pending.pop(_key(url, page_size, params), None)
            if request is None:
                return None
            chain = request.chain
            chain.waiting -= 1
            if time.monotonic() - request.started >= self.max_age_s:
                self._drop(request)  # too old to trust: asked again, by the caller
                return None
            if chain.deferred is not None:  # the chain was full: it goes on now
                link, chain.deferred = chain.deferred, None
                self._request(chain, link)
            if then is not None:
                chain.then = then
            follow = self._follow_ups(chain)
        self._start_all(chain, follow)
        return self._collect(graph, request)

    def _collect(self, graph: GraphClient, request: _Request) -> Page:
        """The request's page, once it has come; its requests charged to ``graph``."""
        try:
            return self._wait(request.future)
        finally:
            graph.api_calls += request.client.api_calls
            graph.throttled += request.client.throttled

    def ahead(self, pages: Iterator[P]) -> Generator[P, None, None]:
        """The pages of a pager that requests one at a time (a keyset listing), the next one
        requested in a thread here while the caller writes this one, and waited for as
        ``take`` waits. A pager ends after its last page without another request, so nothing
        is fetched past the end; an error of the request in flight is raised where its page
        is taken."""
        upcoming = self._submit(next, pages, None)
        try:
            while (page := self._wait(upcoming)) is not None:
                upcoming = self._submit(next, pages, None)
                yield page
        finally:
            upcoming.cancel()  # not started: never sent; started: its page is nobody's

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Drop every request waiting to be taken, and wait at most ``wait_s`` for those on
        the wire: httpx cannot abandon a request from another thread, and one that hangs is
        left to its daemon thread (the process may exit meanwhile)."""
        with self._lock:
            self._closed = True
            while self._pending:
                self._drop(self._pending.popitem(last=False)[1])
        self._pool.close(wait_s)

    def _submit(self, call: Callable[..., P], *args: Any) -> Future[P]:
        with self._lock:
            if self._closed:
                raise PrefetchClosedError("the page prefetch is closed")
            return self._pool.submit(call, *args)

    def _next(self, chain: _Chain, url: str, params: Params = None) -> None:
        """Request ``url`` for the chain, and return once the request is on the wire."""
        with self._lock:
            self._drop_stale()
            request = self._request(chain, url, params)
        if request is not None:
            request.sent.wait(SEND_WAIT_S)

    def _ended(self, chain: _Chain, link: str, opening: bool) -> None:
        """A fetch of the chain read the round's deltaLink: what follows it, requested now."""
        with self._lock:
            chain.ended = (link, opening)
            follow = self._follow_ups(chain)
        self._start_all(chain, follow)

    def _follow_ups(self, chain: _Chain) -> Sequence[tuple[str, Params]]:
        """(Lock held.) The requests that follow the chain's round, once: when both its end
        and its taker's ``then`` are known (whichever came second), unless it was dropped."""
        if chain.then is None or chain.ended is None or chain.followed or chain.dropped:
            return ()
        chain.followed = True
        return chain.then(*chain.ended)

    def _start_all(self, chain: _Chain, requests: Sequence[tuple[str, Params]]) -> None:
        """Each request a chain of its own, with the graph, page size and fetch of ``chain``
        (a request already on its way is not asked twice)."""
        for url, params in requests:
            self.start(chain.graph, url, chain.page_size, chain.fetch, params)

    def _request(self, chain: _Chain, url: str, params: Params = None) -> _Request | None:
        """(Lock held.) Send the request for ``url`` in a thread, if the chain may."""
        key = _key(url, chain.page_size, params)
        if self._closed or chain.dropped or key in self._pending:
            return None
        if chain.waiting >= self.depth:
            chain.deferred = url
            return None
        ahead, sent = chain.graph.fork(), threading.Event()
        future = self._pool.submit(self._fetch, chain, ahead, url, params, sent)
        chain.waiting += 1
        self._pending[key] = request = _Request(time.monotonic(), ahead, future, chain, sent)
        return request

    def _fetch(
        self, chain: _Chain, ahead: GraphClient, url: str, params: Params, sent: threading.Event
    ) -> Page:
        try:
            follow, opening = self._follow(chain), params is not None
            return chain.fetch(
                ahead,
                url,
                chain.page_size,
                follow,
                sent.set,
                params=params,
                on_delta_link=lambda link: self._ended(chain, link, opening),
            )
        finally:
            sent.set()  # failed before it was sent, or a transport that does not trace

    def _follow(self, chain: _Chain) -> NextLink:
        """The callback that a fetch of the chain calls with its page's nextLink."""
        return lambda link: self._next(chain, link)

    def _drop_stale(self) -> None:
        now = time.monotonic()
        while self._pending:
            request = next(iter(self._pending.values()))
            if now - request.started < self.max_age_s and len(self._pending) < self.max_pending:
                return
            self._drop(self._pending.popitem(last=False)[1])

    @staticmethod
    def _drop(request: _Request) -> None:
        """(Lock held; the request already out of ``_pending``.) Its chain asks no more."""
        request.chain.dropped = True
        request.future.cancel()  # not started yet: never sent; else its answer is dropped
