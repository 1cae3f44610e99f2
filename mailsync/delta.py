"""Graph's delta query for one mail folder: what changed since a deltaLink.

``GET /users/{id}/mailFolders/{id}/messages/delta`` takes its options (``$select``,
``$expand`` of the attachments' metadata) on the first request only; after that,
``@odata.nextLink`` is followed exactly as given until a page carries ``@odata.deltaLink``,
where the next round starts. The page size is asked with the
``Prefer: odata.maxpagesize`` header (Graph documents no ``$top`` for delta). Removed items
come as ``{"id": …, "@removed": {"reason": …}}`` and mean "no longer in this folder": a
deletion or a move out, which Graph does not tell apart (mailsync.rounds decides).

A token Graph no longer honours answers 410 (or a SyncStateNotFound/resyncRequired code):
``SyncStateExpiredError``; a mailbox out of sync-state quota answers 403
ErrorQuotaExceeded: ``DeltaQuotaExceededError`` (both raised by ``GraphClient``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from mailsync.errors import BadDataError
from mailsync.graph import (
    EXPAND_ATTACHMENTS,
    SELECT_FIELDS,
    EmailRecord,
    GraphClient,
    parse_message,
)
from mailsync.prefetch import PREFETCH, PagePrefetch


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
        try:
            page.messages.append(parse_message(item))
        except BadDataError:
            page.failed_ids.append(str(item.get("id")) if isinstance(item, dict) else "?")


def fetch_page(
    graph: GraphClient, url: str, page_size: int, params: dict[str, str] | None = None
) -> DeltaPage:
    """One page of a round, parsed."""
    body = graph.get_json(url, params, max_page_size=page_size)
    page = DeltaPage([], [], [], *_links(graph, body))
    _parse_items(body, page)
    return page


def iter_delta(
    graph: GraphClient,
    mailbox: str,
    folder_id: str,
    link: str | None,
    page_size: int,
    prefetch: PagePrefetch = PREFETCH,
) -> Generator[DeltaPage, None, None]:
    """The pages of one round, from ``link`` (a nextLink or deltaLink), or from the start of
    a new round (every message of the folder) when ``link`` is None.

    Each page's next one is requested (and parsed, in its own thread) as soon as the page
    is in hand, before it is handed over; a caller that stops early leaves that request to
    whoever continues the round from the same link (mailsync.prefetch)."""
    url = link or delta_url(graph, mailbox, folder_id)
    params: dict[str, str] | None = (
        None if link else {"$select": SELECT_FIELDS, "$expand": EXPAND_ATTACHMENTS}
    )
    while True:
        page = prefetch.take(graph, url, page_size) if params is None else None
        if page is None:
            page = fetch_page(graph, url, page_size, params)
        if page.next_link is not None:
            prefetch.start(graph, page.next_link, page_size, fetch_page)
        yield page
        if page.next_link is None:
            return
        url, params = page.next_link, None
