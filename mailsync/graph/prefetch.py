"""Delta pages requested before they are needed, across chunk boundaries.

A delta round is a chain: a page's nextLink is known only once the page has arrived. So
the next page is requested as soon as that link is read off a page's raw bytes, before the
page is parsed (mailsync.graph.delta.early_next_link), from the thread that fetched it; that
thread then parses its page, which overlaps the next request and the writing of the page
before. A round requested ahead this way is a chain, and at most ``depth`` of its pages
wait untaken (in flight, or parsed): the one in flight and the one parsed next, so memory
stays flat however slowly pages are written. A link named while the chain is full is
requested when its taker takes the next page.

When a chunk stops in the middle of a round, the requests on their way stay for whichever
attempt continues the round from the same link: in this process, the next chunk of the
folder, which takes them over instead of asking again. A request nobody takes within
``max_age_s`` is dropped (another worker took the next chunk, or the job stopped), and its
chain with it; so is the oldest when ``max_pending`` are waiting.

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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mailsync.graph.client import GraphClient

Page = Any  # what a fetch returns (mailsync.graph.delta: a parsed DeltaPage)
NextLink = Callable[[str], None]  # called by a fetch with its page's nextLink, read early
Sent = Callable[[], None]  # called by a fetch once its request is on the wire
Fetch = Callable[[GraphClient, str, int, NextLink, Sent], Page]  # → the page
# How long the thread that named a link waits for its request to be on the wire, before it
# parses its own page: a parse holds the GIL for tens of milliseconds (orjson does not let
# it go), and the new request would wait behind it.
SEND_WAIT_S = 0.05


@dataclass
class _Chain:
    """One round requested ahead: each page as soon as the one before named its link."""

    graph: GraphClient  # its requests are made by forks of this client
    page_size: int
    fetch: Fetch
    waiting: int = 0  # its requests not yet taken (in flight or parsed)
    deferred: str | None = None  # a link named while ``waiting`` was full
    dropped: bool = False  # nobody took its pages in time: it requests nothing more


@dataclass
class _Request:
    started: float
    client: GraphClient  # the fork that made it: its requests go to the taker's count
    future: Future[Page]
    chain: _Chain
    sent: threading.Event  # its request is on the wire (or it ended)


class PagePrefetch:
    def __init__(
        self,
        max_workers: int = 16,
        max_age_s: float = 60.0,
        max_pending: int = 32,
        depth: int = 2,
    ) -> None:
        # A thread per request on its way: mailboxes synced in parallel in one process each
        # keep their own round going, ``depth`` requests each.
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="page-prefetch")
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[str, int], _Request] = OrderedDict()
        self.max_age_s, self.max_pending, self.depth = max_age_s, max_pending, depth

    def start(self, graph: GraphClient, url: str, page_size: int, fetch: Fetch) -> None:
        """Request the page at ``url`` (a nextLink, replayed exactly) now, for a later take,
        unless it is on its way already: ``fetch`` runs in a thread with a fork of ``graph``,
        and requests the pages after it the same way."""
        self._next(_Chain(graph, page_size, fetch), url)

    def chain(self, graph: GraphClient, page_size: int, fetch: Fetch) -> NextLink:
        """For a page fetched by its taker itself: the callback that requests the pages
        after it, as ``start`` does."""
        return self._follow(_Chain(graph, page_size, fetch))

    def take(self, graph: GraphClient, url: str, page_size: int) -> Page | None:
        """The page at ``url`` if it was requested ahead (waiting for it if need be), its
        requests now counted by ``graph``; None: ask it yourself."""
        with self._lock:
            request = self._pending.pop((url, page_size), None)
            if request is not None:
                chain = request.chain
                chain.waiting -= 1
                if chain.deferred is not None:  # the chain was full: it goes on now
                    link, chain.deferred = chain.deferred, None
                    self._request(chain, link)
        if request is None:
            return None
        try:
            return request.future.result()
        finally:
            graph.api_calls += request.client.api_calls
            graph.throttled += request.client.throttled

    def _next(self, chain: _Chain, url: str) -> None:
        """Request ``url`` for the chain, and return once the request is on the wire."""
        with self._lock:
            self._drop_stale()
            request = self._request(chain, url)
        if request is not None:
            request.sent.wait(SEND_WAIT_S)

    def _request(self, chain: _Chain, url: str) -> _Request | None:
        """(Lock held.) Send the request for ``url`` in a thread, if the chain may."""
        key = (url, chain.page_size)
        if chain.dropped or key in self._pending:
            return None
        if chain.waiting >= self.depth:
            chain.deferred = url
            return None
        ahead, sent = chain.graph.fork(), threading.Event()
        future = self._pool.submit(self._fetch, chain, ahead, url, sent)
        chain.waiting += 1
        self._pending[key] = request = _Request(time.monotonic(), ahead, future, chain, sent)
        return request

    def _fetch(self, chain: _Chain, ahead: GraphClient, url: str, sent: threading.Event) -> Page:
        try:
            return chain.fetch(ahead, url, chain.page_size, self._follow(chain), sent.set)
        finally:
            sent.set()  # failed before it was sent, or a transport that does not trace

    def _follow(self, chain: _Chain) -> NextLink:
        """The callback that a fetch of the chain calls with its page's nextLink."""
        return lambda link: self._next(chain, link)

    def _drop_stale(self) -> None:
        now = time.monotonic()
        while self._pending:
            key, request = next(iter(self._pending.items()))
            if now - request.started < self.max_age_s and len(self._pending) < self.max_pending:
                return
            del self._pending[key]
            request.chain.dropped = True
            request.future.cancel()  # not started yet: never sent; else its answer is dropped


PREFETCH = PagePrefetch()
