"""Microsoft Graph mail client: count, and pages of messages that continue from a cursor.

Paging. Graph's ``@odata.nextLink`` for messages carries a ``$skip`` offset, which the
server re-evaluates at every request: when mail before the offset is deleted mid-walk, a
walker following nextLinks silently skips messages (the simulator reproduces this, and
``tests/integration/test_simulator.py`` shows it). So every page here is a fresh keyset
query, ``receivedDateTime ge <cursor>`` ordered ascending, and the messages already stored
at exactly the cursor's timestamp are dropped by id. nextLink is followed, exactly as
given, only inside a run of messages that share one timestamp and fill a whole page,
where no cursor can advance. Deep ``$skip`` values also time out on Graph; keyset
queries do not.

Errors become the categories of ``mailsync.errors``; 429 and 5xx are retried here with
Graph's ``Retry-After`` (else bounded exponential backoff with jitter) before giving up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
import orjson

from mailsync.errors import (
    AuthError,
    BadDataError,
    BadRequestError,
    DeltaQuotaExceededError,
    GraphError,
    GraphServerError,
    NotFoundError,
    PermissionDeniedError,
    SyncStateExpiredError,
    ThrottledError,
    TransientError,
)
from mailsync.graph.auth import url_origin
from mailsync.graph.backoff import retry_delay
from mailsync.graph.limits import STREAM_EXTENSION
from mailsync.graph.messages import EmailRecord, parse_item
from mailsync.graph.wire import decode_page

SELECT_FIELDS = (
    "id,internetMessageId,conversationId,subject,from,sender,toRecipients,ccRecipients,"
    "receivedDateTime,sentDateTime,body,bodyPreview,hasAttachments,isRead,importance,"
    "parentFolderId,categories"
)
EPOCH = "1900-01-01T00:00:00Z"
RETRY_STATUSES = {429, 500, 502, 503, 504}
# A delta or skip token Graph no longer honours: that folder's round restarts from scratch.
SYNC_STATE_EXPIRED_CODES = {
    "SyncStateNotFound",
    "syncStateNotFound",
    "resyncRequired",
    "SyncStateInvalid",
    "syncStateInvalid",
}
MAX_TOP = 1_000  # Graph's limit for $top on messages
DOWNLOAD_CHUNK = 1 << 20  # a download is read 1 MiB at a time, never whole
T = TypeVar("T")


@dataclass(frozen=True)
class Cursor:
    """Where a sync continues: after ``received_after``, minus ids already stored there."""

    received_after: str | None = None  # Graph's own timestamp string, e.g. 2024-01-01T00:00:07Z
    seen_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"received_after": self.received_after, "seen_ids": list(self.seen_ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Cursor:
        if not data:
            return cls()
        return cls(data.get("received_after"), tuple(data.get("seen_ids") or ()))


_LINKS = ("@odata.nextLink", "@odata.deltaLink")
_NOT_AN_OBJECT = object()  # the time of an item that is not a JSON object: a tie with nothing


class Listed(NamedTuple):
    """A listing's page, parsed: each message in order, as a record or as the id of one that
    failed its parse, with the receivedDateTime Graph sent for it; and the page's link keys
    as sent (a key present with null is kept)."""

    items: list[tuple[EmailRecord | str, Any]]
    links: dict[str, Any]


@dataclass
class Page:
    messages: list[EmailRecord]  # new to this sync, in receivedDateTime order
    failed_ids: list[str]  # messages Graph sent that do not have the shape we store
    cursor: Cursor  # the position after this page
    exhausted: bool  # nothing more in the window
    last: bool = False  # the pager stops after this page (exhausted, or its limit reached)


def _graph_error_detail(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict):
            return error.get("code"), str(error.get("message", ""))[:300]
        return str(error), ""
    except (ValueError, AttributeError):
        return None, response.text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP-date: Graph does not send those; fall back to backoff


def whole_body(response: httpx.Response) -> bytes:
    """A streamed answer's body, read whole (a JSON page: parsed whole anyway)."""
    return response.read()


def unbind(response: httpx.Response) -> None:
    """Break the cycle between a closed response and its stream, so that the response (a
    page's megabytes) is freed when its last use ends rather than at the garbage collector's
    next pass. httpx's client wraps the stream in one that refers back to the response to
    time it (encode/httpx#3733, not merged): a sync held every page read since the last
    full collection, ~50 MB at 10,000 messages, and the collector traversed them."""
    response.stream = httpx.ByteStream(b"")


def _when_sent(on_sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore trace hook that calls ``on_sent`` when the request has been written."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):
            on_sent()

    return trace


class GraphClient:
    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.api_calls = 0  # every request sent, throttled ones included
        self.throttled = 0

    def serves(self, link: str) -> bool:
        """Whether a link Graph gave earlier points at this client's host: only there does
        the token go (mailsync.graph.auth)."""
        # A link under the base URL is on its host (the authority ends at the first "/"),
        # which spares parsing it: planning asks this of every folder's deltaLink.
        if link.startswith(self.base_url + "/"):
            return True
        return url_origin(link) == url_origin(self.base_url)

    def fork(self) -> GraphClient:
        """A client over the same connection, token and retry policy, counting its own
        requests (mailsync.graph.prefetch: a request made ahead is charged to whoever uses it)."""
        return GraphClient(
            self.http,
            base_url=self.base_url,
            max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            sleep=self.sleep,
            rng=self.rng,
        )

    # -- requests ---------------------------------------------------------------------
    def get_json(
        self,
        url: str,
        params: dict[str, str] | None = None,
        *,
        max_page_size: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """GET a Graph resource as JSON, retrying throttling, 5xx and network errors.

        ``max_page_size`` asks for pages of that size (``Prefer: odata.maxpagesize``, the only
        way to size delta pages), in the same Prefer header as the immutable ids; ``headers``
        adds others (e.g. ``ConsistencyLevel: eventual`` for advanced directory queries)."""
        content = self.get_bytes(url, params, max_page_size=max_page_size, headers=headers)
        return self.decode(content)

    def get_bytes(
        self,
        url: str,
        params: dict[str, str] | None = None,
        *,
        max_page_size: int | None = None,
        headers: dict[str, str] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> bytes:
        """``get_json``'s request, its answer's body not yet parsed (mailsync.graph.delta reads the
        nextLink off it first). ``on_sent`` is called once a request is on the wire, before
        its answer is awaited (mailsync.graph.prefetch)."""
        prefer = 'IdType="ImmutableId"'
        if max_page_size is not None:
            prefer = f"odata.maxpagesize={max_page_size}, {prefer}"
        headers = {"Prefer": prefer, "Accept": "application/json", **(headers or {})}
        extensions = {} if on_sent is None else {"trace": _when_sent(on_sent)}
        request = self.http.build_request(
            "GET", url, params=params, headers=headers, extensions=extensions
        )
        return self.send(request, whole_body)

    def download(self, url: str, consume: Callable[[Iterator[bytes]], T]) -> T:
        """GET raw bytes (an attachment's ``$value``), streamed: ``consume`` reads the body's
        chunks as they arrive, never the whole body at once, and its result is returned.
        Retried as ``get_bytes`` is; a retry calls ``consume`` again from the first byte, so
        it must start afresh."""
        request = self.http.build_request(
            "GET",
            url,
            headers={"Prefer": 'IdType="ImmutableId"'},
            extensions={STREAM_EXTENSION: True},  # the Graph slot is held while it streams
        )
        return self.send(request, lambda response: consume(response.iter_bytes(DOWNLOAD_CHUNK)))

    def send(self, request: httpx.Request, read: Callable[[httpx.Response], T]) -> T:
        """``read(response)`` of a 200 to ``request``, sent again after throttling, 5xx and
        network errors, including those while ``read`` takes the body (Graph's Retry-After,
        else bounded backoff); other answers raise. The one retry loop of every request.

        The answer is streamed: ``read`` takes the body as it wants it, whole
        (``whole_body``) or chunk by chunk (``download``); an error answer's body (small
        JSON) is read for its message. The request is sent as built each time: the auth
        flow (mailsync.graph.auth) sets a fresh token on it, and a 401 is its to retry."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            self.api_calls += 1
            try:
                response = self.http.send(request, stream=True)
                try:
                    if response.status_code == 200:
                        return read(response)
                    response.read()
                finally:
                    response.close()
                    unbind(response)
            except httpx.TimeoutException as exc:
                if last:
                    raise TransientError(f"Graph request timed out: {type(exc).__name__}") from None
                self.sleep(self.backoff(attempt))
                continue
            except httpx.TransportError as exc:
                if last:
                    raise TransientError(
                        f"Graph unreachable: {type(exc).__name__}: {exc}"
                    ) from None
                self.sleep(self.backoff(attempt))
                continue
            if response.status_code in RETRY_STATUSES:
                retry_after = _retry_after(response)
                if response.status_code == 429:
                    self.throttled += 1
                if last:
                    raise self.error(response, retry_after)
                self.sleep(self.backoff(attempt, retry_after))
                continue
            raise self.error(response, None)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return retry_delay(attempt, self.backoff_base_s, self.backoff_max_s, retry_after, self.rng)

    @staticmethod
    def decode(content: bytes) -> dict[str, Any]:
        """A 200's body as the JSON object Graph answers with, or BadDataError."""
        try:
            # orjson: a 1,000-message page is megabytes; this is the sync's hottest parse.
            body = orjson.loads(content)
        except ValueError as exc:
            raise BadDataError(
                f"Graph sent a page that is not valid JSON ({len(content)} bytes): {exc}"
            ) from None
        if not isinstance(body, dict):
            raise BadDataError("Graph sent JSON that is not an object")
        return body

    @staticmethod
    def error(response: httpx.Response, retry_after: float | None) -> GraphError:
        """Graph's error answer as the category of mailsync.errors it belongs to."""
        code, message = _graph_error_detail(response)
        status = response.status_code
        text = f"Graph answered {status} {code or ''}: {message}".strip()
        kinds: dict[int, type[GraphError]] = {
            400: BadRequestError,
            401: AuthError,
            403: PermissionDeniedError,
            404: NotFoundError,
            410: SyncStateExpiredError,
            429: ThrottledError,
        }
        kind = kinds.get(status) or (GraphServerError if status >= 500 else GraphError)
        if code in SYNC_STATE_EXPIRED_CODES:
            kind = SyncStateExpiredError  # some answers say so with a 400 or a 404
        elif status == 403 and code == "ErrorQuotaExceeded":
            kind = DeltaQuotaExceededError
        return kind(text, status=status, code=code, retry_after_s=retry_after)

    # -- mail ---------------------------------------------------------------------------
    def user_url(self, mailbox: str) -> str:
        """The mailbox's Graph URL: every URL of a mailbox starts here, encoded once."""
        return f"{self.base_url}/v1.0/users/{quote(mailbox, safe='@')}"

    def folder_url(self, mailbox: str, folder: str) -> str:
        """A folder by id or well-known name (inbox, sentitems, …)."""
        return f"{self.user_url(mailbox)}/mailFolders/{quote(folder, safe='')}"

    def messages_url(self, mailbox: str, folder: str) -> str:
        return f"{self.folder_url(mailbox, folder)}/messages"

    def relative(self, link: str) -> str:
        """A link Graph gave (``{base}/v1.0/users/…``) as a ``$batch`` item's url
        (``/users/…``): relative to the batch's own version, as Graph requires."""
        prefix = f"{self.base_url}/v1.0/"
        if not link.startswith(prefix):
            raise BadDataError(f"a link is not a v1.0 link to {self.base_url}: cannot batch it")
        return link[len(prefix) - 1 :]

    def link(self, body: dict[str, Any], key: str = "@odata.nextLink") -> str | None:
        """A page's nextLink (or deltaLink, by ``key``), checked: a string pointing at our
        Graph host (the token goes nowhere else, and a link elsewhere would be a server bug
        or an attack); None when the page has none."""
        link = body.get(key)
        if link is not None and not (
            isinstance(link, str) and link.startswith(self.base_url + "/")
        ):
            raise BadDataError(f"Graph's {key} is not a link to {self.base_url}")
        return link

    @staticmethod
    def window_filter(since: str | None, until: str | None) -> str:
        # receivedDateTime must lead the filter because it leads $orderby (InefficientFilter).
        clause = f"receivedDateTime ge {since or EPOCH}"
        return f"{clause} and receivedDateTime lt {until}" if until else clause

    def count_messages(
        self, mailbox: str, folder: str, since: str | None, until: str | None
    ) -> int:
        body = self.get_json(
            self.messages_url(mailbox, folder),
            {
                "$count": "true",
                "$top": "1",
                "$select": "id",
                "$filter": self.window_filter(since, until),
            },
        )
        count = body.get("@odata.count")
        if not isinstance(count, int) or count < 0:
            raise BadDataError("Graph's count answer has no usable @odata.count")
        return count

    def iter_pages(
        self,
        mailbox: str,
        folder: str,
        *,
        cursor: Cursor,
        since: str | None,
        until: str | None,
        page_size: int,
        limit: int | None = None,
    ) -> Iterator[Page]:
        """Pages from ``cursor`` (or ``since``) in time order, to the end of the window or
        until ``limit`` new messages were delivered (the last page asks for no more)."""
        url = self.messages_url(mailbox, folder)
        next_link: str | None = None
        asked = page_size
        delivered = 0
        while True:
            want = None if limit is None else max(1, limit - delivered)
            if next_link:
                raw = self.get_bytes(next_link)  # inside a tie run: followed exactly as given
            else:
                # The messages stored at the cursor's own timestamp come back first and are
                # dropped: ask for that many more, so that a page still brings page_size new
                # ones and a chunk does not end in a tail of one-message requests.
                top = page_size if want is None else min(page_size, want)
                asked = min(MAX_TOP, top + len(cursor.seen_ids))
                start = cursor.received_after or since
                raw = self.get_bytes(
                    url,
                    {
                        "$filter": self.window_filter(start, until),
                        "$orderby": "receivedDateTime asc",
                        "$top": str(asked),
                        "$select": SELECT_FIELDS,  # no $expand: see mailsync.graph.delta
                    },
                )
            listed = self.listed(raw)
            del raw  # megabytes: not kept alive while the caller writes
            page = self._page(listed, cursor, want)
            delivered += len(page.messages)
            page.last = page.exhausted or (limit is not None and delivered >= limit)
            cursor = page.cursor
            link = self.link(listed.links)
            next_link = link if link and self._only_ties(listed, cursor, asked) else None
            del listed  # the page's records: the caller holds the ones it writes
            yield page
            if page.last:
                return

    def listed(self, raw: bytes) -> Listed:
        """A listing's page: each message parsed (or the id of one that failed), with its
        own receivedDateTime, and the page's links. The typed decode first; a page off its
        shape goes to the general parse, message by message (mailsync.graph.wire)."""
        fast = decode_page(raw)
        if fast is not None and not fast.removed_ids:
            return Listed([(m, m.received_raw) for m in fast.messages], fast.links)
        body = self.decode(raw)
        value = body.get("value")
        if not isinstance(value, list):
            raise BadDataError("Graph's page has no 'value' list")
        items: list[tuple[EmailRecord | str, Any]] = []
        for item in value:
            received = item.get("receivedDateTime") if isinstance(item, dict) else _NOT_AN_OBJECT
            items.append((parse_item(item), received))
        return Listed(items, {k: body[k] for k in _LINKS if k in body})

    @staticmethod
    def _only_ties(listed: Listed, cursor: Cursor, page_size: int) -> bool:
        """A full page whose messages all share the cursor's timestamp: no keyset progress."""
        return len(listed.items) >= page_size and all(
            received == cursor.received_after for _, received in listed.items
        )

    @staticmethod
    def _page(listed: Listed, cursor: Cursor, want: int | None = None) -> Page:
        """The new messages of a page (at most ``want``) and the cursor after them."""
        at, ids = cursor.received_after, list(cursor.seen_ids)
        seen = set(ids)
        messages: list[EmailRecord] = []
        failed: list[str] = []
        consumed = 0
        for record, _ in listed.items:
            consumed += 1
            if isinstance(record, str):
                failed.append(record)  # the id of a message that failed its parse
                continue
            if record.received_raw == at:
                if record.graph_id in seen:
                    continue  # stored by the page before, at the cursor's own timestamp
                seen.add(record.graph_id)
                ids.append(record.graph_id)
            else:
                at, ids, seen = record.received_raw, [record.graph_id], {record.graph_id}
            messages.append(record)
            if want is not None and len(messages) >= want:
                break  # the rest is the next page's: the cursor stops here
        exhausted = consumed == len(listed.items) and "@odata.nextLink" not in listed.links
        return Page(messages, failed, Cursor(at, tuple(ids)), exhausted)
