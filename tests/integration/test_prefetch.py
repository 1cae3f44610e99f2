"""A delta round's next page is requested (and parsed, in its own thread) as soon as a page
is in hand; a caller that stops after a page (a chunk that has its share) leaves that
request to whoever continues from the same link (mailsync.graph.prefetch): the round is read
once, and each request is counted by the client that used it. Real simulator over HTTP,
real Graph client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailsync.graph.client import GraphClient
from mailsync.graph.delta import iter_delta
from mailsync.graph.prefetch import NextLink, PagePrefetch, Params, Sent
from mailsync.simulator import GraphSimulator

MAILBOX = "pat@contoso.example"


@pytest.fixture
def simulator() -> Iterator[GraphSimulator]:
    with GraphSimulator() as sim:
        yield sim


@pytest.fixture
def http(simulator: GraphSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {simulator.issue_token()}"}
    with httpx.Client(headers=headers, timeout=10) as client:
        yield client


def test_a_round_stopped_after_a_page_is_continued_without_asking_twice(
    simulator: GraphSimulator, http: httpx.Client
) -> None:
    box = simulator.add_mailbox(MAILBOX, 450, seed=3)  # pages of 100: 5 pages
    prefetch = PagePrefetch()  # depth 2
    first = GraphClient(http, base_url=simulator.url)
    pages = iter_delta(first, MAILBOX, "inbox", None, 100, prefetch)
    page = next(pages)
    pages.close()  # the chunk has its share: it stops here
    assert page.next_link is not None and len(page.messages) == 100
    # Nobody iterates any more, yet pages 2 and 3 are served: each was asked as soon as the
    # page before it arrived (the chain's depth: one in flight, one parsed).
    deadline = time.monotonic() + 10
    while simulator.stats.delta_pages < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert simulator.stats.delta_pages == 3

    second = GraphClient(http, base_url=simulator.url)  # the next chunk's client
    rest = list(iter_delta(second, MAILBOX, "inbox", page.next_link, 100, prefetch))

    ids = {m.graph_id for m in page.messages} | {m.graph_id for p in rest for m in p.messages}
    assert ids == box.ids()
    assert rest[-1].delta_link is not None
    assert simulator.stats.delta_pages == 5  # no page asked twice, none past the end
    assert (first.api_calls, second.api_calls) == (1, 4)  # charged to the user of the page


def plain(
    graph: GraphClient,
    url: str,
    page_size: int,
    _: NextLink,
    sent: Sent,
    *,
    params: Params = None,
) -> dict[str, Any]:
    return graph.get_json(url, params, max_page_size=page_size)  # sent: when it returns


def test_a_request_older_than_its_age_is_dropped_and_the_round_asks_it_again(
    simulator: GraphSimulator, http: httpx.Client
) -> None:
    """Every page here is "too old" (a limit of 0 s): a request made ahead is never handed
    over, by another request (which drops the stale ones) or by a take (which checks the
    age), and the round still ends exact, each page asked again by its taker."""
    box = simulator.add_mailbox(MAILBOX, 150, seed=4)
    prefetch = PagePrefetch(max_age_s=0.0)
    graph = GraphClient(http, base_url=simulator.url)
    pages = iter_delta(graph, MAILBOX, "inbox", None, 100, prefetch)
    page = next(pages)
    pages.close()
    assert page.next_link is not None
    prefetch.start(graph, page.next_link, 50, plain)  # another request: it drops the stale one
    assert prefetch.take(graph, page.next_link, 100) is None
    assert prefetch.take(graph, page.next_link, 50) is None  # too old once taken, too

    rest = list(iter_delta(graph, MAILBOX, "inbox", page.next_link, 100, prefetch))
    ids = {m.graph_id for m in page.messages} | {m.graph_id for p in rest for m in p.messages}
    assert ids == box.ids() and rest[-1].delta_link is not None
    prefetch.close()
