"""A message as mailsync stores it (``EmailRecord``), and the general parse of Graph's JSON
into one (``parse_message``): every field checked, and a message off the shape named in a
``BadDataError``. The sync's pages (delta and listed) take the typed decode of
mailsync.graph.wire first; both end in ``record_of``, so a message's content hash has one
definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import xxhash

from mailsync.errors import BadDataError


@dataclass(frozen=True)
class Attachment:
    graph_attachment_id: str
    name: str | None
    content_type: str | None
    size_bytes: int | None
    is_inline: bool


class EmailRecord(NamedTuple):
    """One message, as stored: the staging table's columns in order (``row``), then what
    the pager and the attachments need. A tuple, not a frozen dataclass: a page builds 500
    of them, and a frozen dataclass's ``__init__`` cost a quarter of the parse."""

    graph_id: str
    internet_message_id: str | None
    conversation_id: str | None
    subject: str | None
    sender_name: str | None
    sender_address: str | None
    from_address: str | None
    to_recipients: str  # JSON text
    cc_recipients: str  # JSON text
    received_at: datetime
    sent_at: datetime | None
    body_content_type: str | None
    body: str | None
    body_preview: str | None
    has_attachments: bool
    is_read: bool | None
    importance: str | None
    parent_folder_id: str | None
    categories: str  # JSON text: the user's category names
    content_hash: str
    received_raw: str  # Graph's own timestamp string (a keyset cursor's value)
    attachments: tuple[Attachment, ...] = ()

    def row(self) -> tuple[Any, ...]:
        """The stored columns (``EMAIL_COLUMNS``), in order."""
        return self[:_STORED]


EMAIL_COLUMNS: tuple[str, ...] = EmailRecord._fields[: EmailRecord._fields.index("received_raw")]
_STORED = len(EMAIL_COLUMNS)


def _parse_time(value: Any, graph_id: str, what: str) -> datetime:
    if not isinstance(value, str):
        raise BadDataError(f"message {graph_id[:20]}: {what} is missing or not a string")
    try:
        return datetime.fromisoformat(value)  # Python 3.11 reads Graph's trailing Z as UTC
    except ValueError:
        raise BadDataError(
            f"message {graph_id[:20]}: {what} {value[:40]!r} is not an ISO 8601 datetime"
        ) from None


def _address(party: Any) -> tuple[str | None, str | None]:
    if not isinstance(party, dict):
        return None, None
    email = party.get("emailAddress") or {}
    if not isinstance(email, dict):
        raise BadDataError("an emailAddress is not an object")
    return email.get("name"), email.get("address")


def _recipients_json(value: Any, what: str) -> str:
    if not value:
        if value is None or isinstance(value, list):
            return "[]"
        raise BadDataError(f"{what} is not a list")
    if not isinstance(value, list):
        raise BadDataError(f"{what} is not a list")
    return recipients_json(map(_address, value))


def recipients_json(parties: Iterable[tuple[str | None, str | None]]) -> str:
    """Recipients as stored (JSON text of name and address each): one definition for both
    parsers, since it is hashed into the content hash."""
    return orjson.dumps([{"name": name, "address": address} for name, address in parties]).decode()


def _attachments(value: Any) -> tuple[Attachment, ...]:
    if not value:
        return ()
    if not isinstance(value, list):
        raise BadDataError("attachments is not a list")
    return tuple(
        Attachment(
            graph_attachment_id=str(a.get("id")),
            name=a.get("name"),
            content_type=a.get("contentType"),
            size_bytes=a.get("size") if isinstance(a.get("size"), int) else None,
            is_inline=bool(a.get("isInline")),
        )
        for a in value
        if isinstance(a, dict) and a.get("id")
    )


def _categories_json(value: Any) -> str:
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(c, str) for c in value)
    ):
        raise BadDataError("categories is not a list of strings")
    return categories_json(value)


def categories_json(names: list[str] | None) -> str:
    """The user's category names as stored (JSON text): one definition for both parsers,
    since it is hashed into the content hash."""
    return "[]" if names is None else orjson.dumps(names).decode()


def parse_message(raw: Any) -> EmailRecord:
    """Graph JSON → EmailRecord, or BadDataError naming what is wrong."""
    if not isinstance(raw, dict):
        raise BadDataError("a message is not a JSON object")
    get = raw.get
    graph_id = get("id")
    if not isinstance(graph_id, str) or not graph_id:
        raise BadDataError("a message has no id")
    received_raw = get("receivedDateTime")
    received_at = _parse_time(received_raw, graph_id, "receivedDateTime")
    sent_raw = get("sentDateTime")
    sent_at = _parse_time(sent_raw, graph_id, "sentDateTime") if sent_raw else None
    body = get("body") or {}
    if not isinstance(body, dict):
        raise BadDataError(f"message {graph_id[:20]}: body is not an object")
    sender_name, sender_address = _address(get("sender"))
    from_address = _address(get("from"))[1]
    to_json = _recipients_json(get("toRecipients"), "toRecipients")
    cc_json = _recipients_json(get("ccRecipients"), "ccRecipients")
    is_read, categories = get("isRead"), _categories_json(get("categories"))
    fields = (
        graph_id,
        get("internetMessageId"),
        get("conversationId"),
        get("subject"),
        sender_name,
        sender_address,
        from_address,
        to_json,
        cc_json,
        received_raw,
        sent_raw,
        body.get("contentType"),
        body.get("content"),
        get("bodyPreview"),
        bool(get("hasAttachments")),
        is_read,
        get("importance"),
        get("parentFolderId"),
        categories,
    )
    for at, what in _TEXT_FIELDS:
        if not isinstance(fields[at], str | None):
            raise BadDataError(f"message {graph_id[:20]}: {what} is not a string")
    return record_of(fields, received_at, sent_at, _attachments(get("attachments")))


# The stored text columns among a message's fields, by position: a value of another JSON
# type is the message's own fault (it is counted failed), not the page's; left to the COPY,
# one such message failed the whole page's write with a TypeError.
_TEXT_FIELDS = (
    (1, "internetMessageId"),
    (2, "conversationId"),
    (3, "subject"),
    (4, "the sender's name"),
    (5, "the sender's address"),
    (6, "the from address"),
    (11, "body.contentType"),
    (12, "body.content"),
    (13, "bodyPreview"),
    (16, "importance"),
    (17, "parentFolderId"),
)


def parse_item(raw: Any) -> EmailRecord | str:
    """A page's item as a record, or the id (``?`` when it has none) of a message that
    fails its parse: counted failed, without failing its page."""
    try:
        return parse_message(raw)
    except BadDataError:
        return str(raw.get("id")) if isinstance(raw, dict) else "?"


def record_of(
    fields: tuple[Any, ...],
    received_at: datetime,
    sent_at: datetime | None,
    attachments: tuple[Attachment, ...],
) -> EmailRecord:
    """The record of a message's stored ``fields`` as Graph sent them (``EMAIL_COLUMNS`` up
    to ``categories``, with Graph's own timestamp strings and ``isRead`` as sent), their
    times parsed, and its attachments. Both parsers of a message end here
    (mailsync.graph.wire is the other), so its content hash has one definition."""
    # Hash of what we store, so an unchanged message costs no write on replay. orjson: the
    # body is most of a message, and escaping it to ASCII (json.dumps) cost more than the
    # rest of the parse together. XXH3-128, not SHA-256: the hash only tells one message's
    # versions apart, and SHA-256 of a 4 KB message took 2.5 µs (XXH3: 0.1), about a
    # fifteenth of the process's CPU a message (docs/benchmark.md, stop 33).
    content_hash = xxhash.xxh3_128_hexdigest(orjson.dumps(fields))
    is_read = fields[15]
    return EmailRecord(
        fields[0],
        fields[1],
        fields[2],
        fields[3],
        fields[4],
        fields[5],
        fields[6],
        fields[7],
        fields[8],
        received_at,
        sent_at,
        fields[11],
        fields[12],
        fields[13],
        fields[14],
        is_read if isinstance(is_read, bool) else None,
        fields[16],
        fields[17],
        fields[18],
        content_hash,
        fields[9],  # received_raw: Graph's own string (checked by the caller's time parse)
        attachments,
    )
