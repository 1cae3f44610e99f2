"""A round requested ahead (mailsync.graph.prefetch): each page as soon as the one before named
its link, never more than ``depth`` untaken; a page too old when taken is asked again; a
stop wakes a wait on a page; ``close`` ends it all; and the nextLink read off a page's raw
bytes (mailsync.graph.delta.early_next_link). Threads, no I/O: the fetch is a function."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from mailsync.graph.client import GraphClient
from mailsync.graph.delta import early_delta_link, early_next_link
from mailsync.graph.prefetch import NextLink, PagePrefetch, Params, PrefetchClosedError, Sent
from mailsync.sync import shutdown


class Round:
    """A round of ``pages`` pages whose links are "1", "2", …: a fetch names the next link,
    then finishes (``done`` records the finished fetches, in order). The last page names
    the round's deltaLink, "end-N"; any other url (another round's) is a one-page round."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.asked: list[str] = []
        self.done: list[str] = []
        self.lock = threading.Lock()

    def fetch(
        self,
        graph: GraphClient,
        url: str,
        page_size: int,
        next_link: NextLink,
        sent: Sent,
        *,
        params: Params = None,
        on_delta_link: NextLink | None = None,
    ) -> str:
        sent()
        with self.lock:
            self.asked.append(url)
        graph.api_calls += 1
        if url.isdigit() and int(url) < self.pages:
            next_link(str(int(url) + 1))
        elif on_delta_link is not None:
            on_delta_link(f"end-{url}")
        with self.lock:
            self.done.append(url)
        return f"page {url}"

    def wait_done(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.done) < count and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(self.done) == count


def client() -> GraphClient:
    return GraphClient(httpx.Client(), base_url="https://graph.invalid")


def test_a_chain_asks_ahead_until_depth_pages_wait_then_goes_on_as_they_are_taken() -> None:
    rounds, prefetch = Round(pages=6), PagePrefetch(depth=2)
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch)
    rounds.wait_done(2)  # 1 named 2; 2 named 3 while 1 and 2 were untaken: deferred
    assert rounds.asked == ["1", "2"]

    assert prefetch.take(graph, "1", 100) == "page 1"
    rounds.wait_done(3)  # taking 1 made room: 3 is asked, and 4 waits
    assert rounds.asked == ["1", "2", "3"]

    for link in ("2", "3", "4", "5", "6"):
        assert prefetch.take(graph, link, 100) == f"page {link}"
    assert rounds.asked == ["1", "2", "3", "4", "5", "6"]  # each once, none past the end
    assert graph.api_calls == 6  # every request charged to the taker


def test_a_page_asked_by_another_size_or_link_is_not_taken() -> None:
    rounds, prefetch = Round(pages=1), PagePrefetch()
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch)
    assert prefetch.take(graph, "1", 50) is None
    assert prefetch.take(graph, "2", 100) is None
    assert prefetch.take(graph, "1", 100) == "page 1"
    assert prefetch.take(graph, "1", 100) is None  # taken once


def test_a_chain_nobody_takes_is_dropped_and_asks_nothing_more() -> None:
    rounds, prefetch = Round(pages=10), PagePrefetch(max_age_s=0.0, depth=1)
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch)
    rounds.wait_done(1)  # 1 named 2: deferred (depth 1)
    prefetch.start(graph, "9", 100, rounds.fetch)  # any request drops the stale ones
    assert prefetch.take(graph, "1", 100) is None  # dropped, and its chain with it
    rounds.wait_done(2)
    assert rounds.asked == ["1", "9"]


class Following:
    """A ``Then`` that records what it was told and asks for "next" (and the catch-up of a
    round that did not end on its opening page)."""

    def __init__(self) -> None:
        self.told: list[tuple[str, bool]] = []

    def __call__(self, delta_link: str, opening: bool) -> list[tuple[str, Params]]:
        self.told.append((delta_link, opening))
        catch_up: list[tuple[str, Params]] = [] if opening else [(delta_link, None)]
        return [*catch_up, ("next", {"$select": "id"})]


def test_a_rounds_end_requests_what_follows_it_at_once_each_once() -> None:
    rounds, prefetch, following = Round(pages=3), PagePrefetch(), Following()
    graph = client()
    assert prefetch.page(graph, "1", 100, rounds.fetch, then=following) == "page 1"
    rounds.wait_done(5)  # 2, 3 (its deltaLink read), then the catch-up and the next round
    assert following.told == [("end-3", False)]
    assert rounds.asked[:3] == ["1", "2", "3"]
    assert sorted(rounds.asked[3:]) == ["end-3", "next"]

    for link in ("2", "3"):  # taking the rest again with ``then`` asks nothing more
        assert prefetch.page(graph, link, 100, rounds.fetch, then=following) == f"page {link}"
    assert prefetch.take(graph, "end-3", 100) == "page end-3"
    assert prefetch.take(graph, "next", 100, {"$select": "id"}) == "page next"
    assert following.told == [("end-3", False)]
    assert len(rounds.asked) == 5
    assert graph.api_calls == 5  # every request charged to its taker
    prefetch.close()


def test_a_round_requested_ahead_follows_its_end_once_its_taker_says_what_follows() -> None:
    """The next folder's first page was asked by the folder before; it was the whole round
    (its deltaLink read before anyone took it): what follows it is asked when it is taken,
    and a round from scratch of one page (its opening request) has no catch-up."""
    rounds, prefetch, following = Round(pages=1), PagePrefetch(), Following()
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch, {"$select": "id"})  # as a ``Then`` does
    rounds.wait_done(1)
    assert rounds.asked == ["1"]  # its end was read, but nobody said what follows

    page = prefetch.take(graph, "1", 100, {"$select": "id"}, then=following)
    assert page == "page 1"
    rounds.wait_done(2)
    assert following.told == [("end-1", True)]  # the opening page: no catch-up
    assert rounds.asked == ["1", "next"]
    prefetch.close()


def test_an_offered_page_is_taken_once_charged_to_nobody_and_its_end_followed() -> None:
    rounds, prefetch, following = Round(pages=1), PagePrefetch(), Following()
    graph = client()
    prefetch.offer(graph, "link", 100, rounds.fetch, "page from a batch", "end-link")
    assert rounds.asked == []  # nothing is requested before its taker comes

    assert prefetch.page(graph, "link", 100, rounds.fetch, then=following) == "page from a batch"
    rounds.wait_done(2)  # the taker named what follows the round: asked at once
    assert following.told == [("end-link", False)]
    assert sorted(rounds.asked) == ["end-link", "next"]
    assert prefetch.page(graph, "link", 100, rounds.fetch) == "page link"  # offered once
    assert graph.api_calls == 1  # the offered page cost nothing; the second take asked
    prefetch.close()


def test_an_offered_page_older_than_the_age_limit_is_asked_again() -> None:
    rounds, prefetch = Round(pages=1), PagePrefetch(max_age_s=0.0)
    graph = client()
    prefetch.offer(graph, "link", 100, rounds.fetch, "page from a batch", None)
    assert prefetch.page(graph, "link", 100, rounds.fetch) == "page link"
    assert rounds.asked == ["link"]
    prefetch.close()


def test_a_dropped_round_requests_nothing_after_its_end() -> None:
    rounds, prefetch, following = Round(pages=1), PagePrefetch(max_age_s=0.0), Following()
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch)
    rounds.wait_done(1)
    assert prefetch.take(graph, "1", 100, then=following) is None  # too old: dropped
    assert following.told == [] and rounds.asked == ["1"]
    prefetch.close()


def page(link_key: str, link: str, *, before_value: bool = False) -> bytes:
    value = [{"id": "a", "body": {"content": 'say "@odata.nextLink": "https://evil"'}}]
    link_json = orjson.dumps(link).decode()
    if before_value:
        return f'{{"{link_key}": {link_json}, "value": {orjson.dumps(value).decode()}}}'.encode()
    return (
        f'{{"@odata.context":"x","value":{orjson.dumps(value).decode()},"{link_key}":{link_json}}}'
    ).encode()


def test_the_next_link_is_read_off_the_raw_page_wherever_graph_writes_it() -> None:
    link = "https://graph.microsoft.com/v1.0/users/u/mailFolders/f/messages/delta?$skiptoken=a\\b"
    assert early_next_link(page("@odata.nextLink", link)) == link
    assert early_next_link(page("@odata.nextLink", link, before_value=True)) == link
    # A body that quotes the key is JSON-escaped: never taken for the link.
    assert early_next_link(page("@odata.deltaLink", link)) is None
    assert early_next_link(b'{"value":[],"@odata.nextLink":"https://cut-off') is None
    assert early_next_link(b'{"value":[],"@odata.nextLink":17}') is None
    assert early_delta_link(page("@odata.deltaLink", link)) == link
    assert early_delta_link(page("@odata.nextLink", link)) is None


def test_a_page_requested_longer_ago_than_the_age_limit_is_asked_again_when_taken() -> None:
    rounds, prefetch = Round(pages=1), PagePrefetch(max_age_s=0.0)
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch)
    rounds.wait_done(1)  # in hand, but requested "too long" ago already
    assert prefetch.take(graph, "1", 100) is None  # dropped: not handed over

    assert prefetch.page(graph, "1", 100, rounds.fetch) == "page 1"  # asked again
    assert rounds.asked == ["1", "1"]
    assert graph.api_calls == 1  # the dropped request is counted by nobody
    prefetch.close()


class Hanging:
    """A fetch whose request is on the wire and stays there until ``answer`` is set."""

    def __init__(self) -> None:
        self.answer = threading.Event()

    def fetch(
        self,
        graph: GraphClient,
        url: str,
        page_size: int,
        next_link: NextLink,
        sent: Sent,
        *,
        params: Params = None,
        on_delta_link: NextLink | None = None,
    ) -> str:
        sent()
        self.answer.wait(30)
        return f"page {url}"

    def pages(self) -> Iterator[str]:
        self.answer.wait(30)
        yield "page 1"


def test_a_stop_wakes_a_wait_on_a_page_whose_request_hangs() -> None:
    """The first page of a round and the next page of a listing: a stop asked (as SIGTERM
    and Ctrl-C ask it) while their request hangs raises StopRequested in the waiting thread
    at once, the request still unanswered."""
    hanging, prefetch = Hanging(), PagePrefetch(wait=shutdown.result)
    graph = client()
    try:
        with ThreadPoolExecutor(2) as threads:
            round_page = threads.submit(prefetch.page, graph, "1", 100, hanging.fetch)
            listed = threads.submit(next, prefetch.ahead(hanging.pages()))
            shutdown.request_stop()
            for waiting in (round_page, listed):
                with pytest.raises(shutdown.StopRequested):
                    waiting.result(timeout=20)
            assert not hanging.answer.is_set()  # woken by the stop, not by an answer
    finally:
        hanging.answer.set()
        shutdown.clear()
        prefetch.close()


def test_close_drops_the_pages_waiting_joins_its_threads_and_takes_no_more() -> None:
    rounds = Round(pages=5)
    prefetch = PagePrefetch(name="prefetch-being-closed")
    graph = client()
    prefetch.start(graph, "1", 100, rounds.fetch)
    rounds.wait_done(2)  # pages 1 and 2 wait untaken, 3 deferred

    prefetch.close()

    alive = [t.name for t in threading.enumerate() if t.name.startswith("prefetch-being-closed")]
    assert alive == []
    assert prefetch.take(graph, "1", 100) is None
    with pytest.raises(PrefetchClosedError):
        prefetch.page(graph, "3", 100, rounds.fetch)
    with pytest.raises(PrefetchClosedError):
        next(prefetch.ahead(iter(["page"])))
    assert rounds.asked == ["1", "2"]  # nothing asked since
