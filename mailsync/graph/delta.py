"""Graph's delta query for one mail folder: what changed since a deltaLink.

``GET /users/{id}/mailFolders/{id}/messages/delta`` takes its options (``$select``) on the
first request only, never ``$expand``: Graph has been seen to ignore a nested ``$select``
there and put every attachment's base64 content into the page (docs-contrib#8431), so
attachments are fetched apart (mailsync.graph.attachments); after that,
``@odata.nextLink`` is followed exactly as given until a page carries ``@odata.deltaLink``,
where the next round starts. The page size is asked with the
``Prefer: odata.maxpagesize`` header (Graph documents no ``$top`` for delta). Removed items
come as ``{"id": …, "@removed": {"reason": …}}`` and mean "no longer in this folder": a
deletion or a move out, which Graph does not tell apart (mailsync.sync.rounds decides).

A token Graph no longer honours answers 410 (or a SyncStateNotFound/resyncRequired code):
``SyncStateExpiredError``; a mailbox out of sync-state quota answers 403
ErrorQuotaExceeded: ``DeltaQuotaExceededError`` (both raised by ``GraphClient``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import orjson

from mailsync.errors import BadDataError
from mailsync.graph.client import SELECT_FIELDS, GraphClient
from mailsync.graph.messages import EmailRecord, parse_item
from mailsync.graph.prefetch import PagePrefetch, Then
from mailsync.graph.wire import decode_page

logger = logging.getLogger(__name__)

# The page's nextLink as it stands in the raw JSON: the key, then a JSON string. Inside a
# JSON string every quote is escaped, so the key's quoted form can only be a real key.
_NEXT_LINK = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\]|\\.)*")')
_DELTA_LINK = re.compile(rb'"@odata\.deltaLink"\s*:\s*("(?:[^"\\]|\\.)*")')


@dataclass
class DeltaPage:
    messages: list[EmailRecord]  # added to, changed in, or moved into the folder
    removed_ids: list[str]  # no longer in the folder
    failed_ids: list[str]  # items that do not have the shape we store
    next_link: str | None  # the round goes on here
    delta_link: str | None  # the round is complete; the next one starts here


def delta_url(graph: GraphClient, mailbox: str, folder_id: str) -> str:
    return f"{graph.messages_url(mailbox, folder_id)}/delta"


def _links(graph: GraphClient, body: dict[str, Any]) -> tuple[str | None, str | None]:
    next_link, delta_link = graph.link(body), graph.link(body, "@odata.deltaLink")
    if (next_link is None) == (delta_link is None):
        raise BadDataError("Graph's delta page needs exactly one of nextLink and deltaLink")
    return next_link, delta_link


def _parse_items(body: dict[str, Any], page: DeltaPage) -> None:
    value = body.get("value")
    if not isinstance(value, list):
        raise BadDataError("Graph's delta page has no 'value' list")
    for item in value:
        if isinstance(item, dict) and "@removed" in item:
            if not isinstance(item.get("id"), str):
                raise BadDataError("Graph's delta page removes an item without an id")
            page.removed_ids.append(item["id"])
            continue
        parsed = parse_item(item)
        if isinstance(parsed, str):
            page.failed_ids.append(parsed)
        else:
            page.messages.append(parsed)


def early_next_link(raw: bytes) -> str | None:
    """A page's nextLink read off its raw bytes, before the page is parsed (None: not found).

    The next request of a round needs only this link, and parsing a page of 500 messages
    takes longer than the link's search: found here, the next page is on its way while this
    one is parsed. Graph writes the link after ``value`` or before it; the last occurrence
    is searched from the end. What the parsed page says wins: a link it does not confirm is
    a request nobody takes (mailsync.graph.prefetch drops it)."""
    return _early_link(raw, b'"@odata.nextLink"', _NEXT_LINK)


def early_delta_link(raw: bytes) -> str | None:
    """A round's last page's deltaLink, read off its raw bytes as ``early_next_link`` reads
    a nextLink: the requests that follow the round (its catch-up, the next folder's first
    page) leave before this page is parsed and written (mailsync.sync.rounds)."""
    return _early_link(raw, b'"@odata.deltaLink"', _DELTA_LINK)


def _early_link(raw: bytes, key: bytes, pattern: re.Pattern[bytes]) -> str | None:
    at = raw.rfind(key)
    if at < 0:
        return None
    match = pattern.match(raw, at)
    if match is None:
        return None
    try:
        link = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    return link if isinstance(link, str) else None


def fetch_page(
    graph: GraphClient,
    url: str,
    page_size: int,
    on_next_link: Callable[[str], None] | None = None,
    on_sent: Callable[[], None] | None = None,
    *,
    params: dict[str, str] | None = None,
    on_delta_link: Callable[[str], None] | None = None,
) -> DeltaPage:
    """One page of a round, parsed. ``on_next_link`` is called with the page's nextLink as
    soon as it is read off the raw bytes, before the parse (to request the next page);
    ``on_delta_link`` likewise with the deltaLink of a round's last page (to request what
    follows the round); ``on_sent`` once the request for this page is on the wire."""
    raw = graph.get_bytes(url, params, max_page_size=page_size, on_sent=on_sent)
    early = None
    if on_next_link is not None and (early := early_next_link(raw)) is not None:
        on_next_link(early)
    elif on_delta_link is not None and (end := early_delta_link(raw)) is not None:
        on_delta_link(end)
    fast = decode_page(raw)
    if fast is not None:
        page = DeltaPage(fast.messages, fast.removed_ids, [], *_links(graph, fast.links))
    else:  # off the expected shape: the general parse names what is wrong
        body = graph.decode(raw)
        del raw  # a page is megabytes: not kept while it is parsed
        page = page_from_body(graph, body)
    if early is not None and early != page.next_link:
        logger.warning("a delta page's nextLink read early differs from the parsed one")
    return page


def page_from_body(graph: GraphClient, body: dict[str, Any]) -> DeltaPage:
    """A delta page from its JSON body (a response's, or a ``$batch`` item's); BadDataError
    when it is not one."""
    page = DeltaPage([], [], [], *_links(graph, body))
    _parse_items(body, page)
    return page


def round_start(
    graph: GraphClient, mailbox: str, folder_id: str, link: str | None
) -> tuple[str, dict[str, str] | None]:
    """A round's first request: ``link`` (a nextLink or deltaLink carries its options), or
    the folder's delta from scratch with its ``$select``."""
    if link:
        return link, None
    return delta_url(graph, mailbox, folder_id), {"$select": SELECT_FIELDS}


def iter_delta(
    graph: GraphClient,
    mailbox: str,
    folder_id: str,
    link: str | None,
    page_size: int,
    prefetch: PagePrefetch,
    then: Then | None = None,
) -> Generator[DeltaPage, None, None]:
    """The pages of one round, from ``link`` (a nextLink or deltaLink), or from the start of
    a new round (every message of the folder) when ``link`` is None.

    Every request runs in a thread of ``prefetch``, and each page's next one is requested
    (and parsed, in its own thread) as soon as the page's nextLink is read off its bytes,
    before the page is parsed; a caller that stops early leaves those requests to whoever
    continues the round from the same link (mailsync.graph.prefetch). ``then`` names what
    is requested as soon as the round's deltaLink is read (mailsync.sync.rounds)."""
    url, params = round_start(graph, mailbox, folder_id, link)
    while True:
        page: DeltaPage = prefetch.page(graph, url, page_size, fetch_page, params, then=then)
        if page.next_link is not None:  # read early, its request is on its way already
            prefetch.start(graph, page.next_link, page_size, fetch_page)
        yield page
        if page.next_link is None:
            return
        url, params = page.next_link, None
