"""A page's bytes decoded straight into typed structs (msgspec): the sync's hot parse.

``orjson`` builds a dict for every message and every nested object of a page, and the parse
then reads each field back out of them with a check: about 15 µs a message, a third of the
syncing process's CPU (docs/benchmark.md, issue 23). Here msgspec decodes the bytes into
structs of the fields we store (the rest is skipped, not built), untracked by the garbage
collector, and checks their JSON types as it goes; the record is then built by the same
``record_of`` as ``parse_message``'s, so both give the same record and content hash.

Only the expected shape takes this path. Anything else on a page (a field of another JSON
type, a message without an id or a valid receivedDateTime, an item that is not an object,
JSON that does not parse) returns None, and the caller parses the page the general way
(``GraphClient.decode`` and ``parse_message``), which names what is wrong and counts a bad
message as failed without failing the page. Both kinds of page take this path: a folder's
delta pages (mailsync.graph.delta) and a window's listed pages (``GraphClient.listed``).
A message with attachments inline (never asked for: no ``$expand``) takes the general
parse too. Where the two differ, on purpose: a value in a field we do not read is skipped
unchecked here, so a number too large for a double or bytes that are not UTF-8 there pass,
where orjson refuses the page; nothing of them is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from mailsync.graph.messages import EmailRecord, categories_json, recipients_json, record_of


# Graph's own field names (camelCase), so that msgspec maps them without a rename each.
class _Address(msgspec.Struct, gc=False):
    name: str | None = None
    address: str | None = None


class _Party(msgspec.Struct, gc=False):
    emailAddress: _Address | None = None


class _Body(msgspec.Struct, gc=False):
    contentType: str | None = None
    content: str | None = None


class _Removed(msgspec.Struct, gc=False):
    reason: str | None = None


class _Item(msgspec.Struct, gc=False):
    """A message, or (``removed`` set) an item that left the folder: Graph's own names."""

    id: str
    removed: _Removed | msgspec.UnsetType | None = msgspec.field(
        name="@removed", default=msgspec.UNSET
    )
    internetMessageId: str | None = None
    conversationId: str | None = None
    subject: str | None = None
    sender: _Party | None = None
    from_: _Party | None = msgspec.field(name="from", default=None)
    toRecipients: list[_Party] | None = None
    ccRecipients: list[_Party] | None = None
    receivedDateTime: str | None = None
    sentDateTime: str | None = None
    body: _Body | None = None
    bodyPreview: str | None = None
    hasAttachments: bool | None = None
    isRead: bool | None = None
    importance: str | None = None
    parentFolderId: str | None = None
    categories: list[str] | None = None
    attachments: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # present: the general parse


class _Page(msgspec.Struct, gc=False):
    value: list[_Item]
    # UNSET when the page has no such key: a key sent as null is kept, as the general
    # parse keeps it (a listing with a null nextLink is not exhausted by it)
    next_link: Any = msgspec.field(name="@odata.nextLink", default=msgspec.UNSET)
    delta_link: Any = msgspec.field(name="@odata.deltaLink", default=msgspec.UNSET)


# One decoder for every prefetch thread: its methods are threadsafe since msgspec 0.16
# (msgspec#402; pyproject asks for 0.18 or newer).
_decoder = msgspec.json.Decoder(_Page)
_NO_PARTY = _Party()
_NO_ADDRESS = _Address()
_NO_BODY = _Body()


class _OffShape(Exception):
    """An item the general parse must judge (it names the problem, or fails the message)."""


class FastPage(msgspec.Struct, gc=False):
    messages: list[EmailRecord]
    removed_ids: list[str]  # a delta page's items that left the folder
    links: dict[str, Any]  # the page's "@odata.nextLink"/"@odata.deltaLink", unchecked


def decode_page(raw: bytes) -> FastPage | None:
    """The page's messages, removed ids and links; None when anything on it is off the
    expected shape (the caller then parses it the general way)."""
    try:
        page = _decoder.decode(raw)
        messages: list[EmailRecord] = []
        removed: list[str] = []
        for item in page.value:
            if item.removed is not msgspec.UNSET:
                removed.append(item.id)
            else:
                messages.append(_record(item))
    except (msgspec.DecodeError, _OffShape, RecursionError):
        # DecodeError includes ValidationError. RecursionError: JSON nested deeper than
        # msgspec goes (~1,000 levels; orjson names the page bad at 1,024)
        return None
    links = {}
    if page.next_link is not msgspec.UNSET:
        links["@odata.nextLink"] = page.next_link
    if page.delta_link is not msgspec.UNSET:
        links["@odata.deltaLink"] = page.delta_link
    return FastPage(messages, removed, links)


def _recipients(parties: list[_Party] | None) -> str:
    if not parties:
        return "[]"
    addresses = (p.emailAddress or _NO_ADDRESS for p in parties)
    return recipients_json((a.name, a.address) for a in addresses)


def _time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _OffShape from None


def _record(m: _Item) -> EmailRecord:
    graph_id, received_raw, sent_raw = m.id, m.receivedDateTime, m.sentDateTime
    if not graph_id or received_raw is None or m.attachments is not msgspec.UNSET:
        raise _OffShape
    body = m.body or _NO_BODY
    sender = (m.sender or _NO_PARTY).emailAddress or _NO_ADDRESS
    from_ = (m.from_ or _NO_PARTY).emailAddress or _NO_ADDRESS
    fields = (
        graph_id,
        m.internetMessageId,
        m.conversationId,
        m.subject,
        sender.name,
        sender.address,
        from_.address,
        _recipients(m.toRecipients),
        _recipients(m.ccRecipients),
        received_raw,
        sent_raw,
        body.contentType,
        body.content,
        m.bodyPreview,
        bool(m.hasAttachments),
        m.isRead,
        m.importance,
        m.parentFolderId,
        categories_json(m.categories),
    )
    return record_of(fields, _time(received_raw), _time(sent_raw) if sent_raw else None, ())
