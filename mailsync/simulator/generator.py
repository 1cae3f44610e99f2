"""Generated messages: the data the Graph simulator serves.

Pure functions, no I/O. Everything derives from ``(mailbox, seed, index)`` so two runs (or two
processes) generate byte-identical messages, and two mailboxes never share an id.

A ``Message`` keeps only a span into ``corpus``'s paragraph pool for its body and rebuilds
the html on demand; the server renders bodies straight from the pool's pre-escaped JSON
fragments (``body_json_fragment``) and never builds the string at all.
"""

from __future__ import annotations

import binascii
import bisect
import gc
import hashlib
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from mailsync.simulator import corpus

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_MAILBOX = "user@contoso.example"
DOMAIN = "contoso.example"

TIE_PROBABILITY = 0.05  # share the previous message's receivedDateTime: ties are deliberate
MAX_STEP_S = 600
ATTACHMENT_PROBABILITY = 0.15
IMPORTANCE_HIGH = 0.10
IMPORTANCE_LOW = 0.05
RECENT_CONVERSATIONS = 20

# Graph returns these when a message is fetched without $select (attachments only via $expand).
GRAPH_FIELDS = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isRead",
    "isDraft",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
)
ATTACHMENT_FIELDS = ("id", "name", "contentType", "size", "isInline")


@dataclass(slots=True)
class Message:
    """One message; attribute names are the Graph JSON names (``from`` is ``from_``).

    The simulator's store treats a Message as immutable once published: a change is a copy
    (``dataclasses.replace``) with a new ``changeKey``, which is what render caches key on.
    """

    id: str
    receivedDateTime: str
    sentDateTime: str
    createdDateTime: str
    lastModifiedDateTime: str
    changeKey: str
    internetMessageId: str
    conversationId: str
    subject: str
    bodyPreview: str
    from_: dict[str, dict[str, str]]
    sender: dict[str, dict[str, str]]
    toRecipients: list[dict[str, dict[str, str]]]
    ccRecipients: list[dict[str, dict[str, str]]]
    isRead: bool
    importance: str
    hasAttachments: bool
    parentFolderId: str
    attachments: list[dict[str, object]]
    received_ts: int  # receivedDateTime as epoch seconds: the sort key, no parsing needed
    body_span: tuple[int, int]  # (first paragraph, count) in the pool, see module doc
    categories: tuple[str, ...] = ()
    isDraft: bool = False
    body_extra: str = ""  # html after the generated body (an inline image's <img src="cid:">)

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.received_ts, self.id)

    @property
    def received(self) -> datetime:
        return datetime.fromtimestamp(self.received_ts, UTC)

    @property
    def body_paragraphs(self) -> list[int]:
        first, count = self.body_span
        return [(first + k) % corpus.POOL_SIZE for k in range(count)]

    @property
    def body_content(self) -> str:
        return corpus.body_html(*self.body_span) + self.body_extra

    @property
    def body(self) -> dict[str, str]:
        return {"contentType": "html", "content": self.body_content}

    @property
    def body_size(self) -> int:
        """Characters in ``body.content`` without building it."""
        return corpus.body_length(*self.body_span) + len(self.body_extra)

    def body_json_fragment(self) -> bytes:
        """``body.content`` JSON-escaped, UTF-8, without the surrounding quotes."""
        fragment = corpus.body_json(*self.body_span)
        if self.body_extra:
            fragment += orjson.dumps(self.body_extra)[1:-1]
        return fragment

    def to_graph(
        self,
        select: Iterable[str] | None = None,
        *,
        expand_attachments: bool = False,
        body_content: str | None = None,
    ) -> dict[str, object]:
        """The Graph JSON object; ``select`` limits fields (``id`` always included).

        ``body_content`` replaces the html (the simulator passes a marker and splices the
        pre-escaped body into the JSON bytes itself).
        """
        content = self.body_content if body_content is None else body_content
        full: dict[str, object] = {  # Graph's field order
            "id": self.id,
            "createdDateTime": self.createdDateTime,
            "lastModifiedDateTime": self.lastModifiedDateTime,
            "changeKey": self.changeKey,
            "categories": list(self.categories),
            "receivedDateTime": self.receivedDateTime,
            "sentDateTime": self.sentDateTime,
            "hasAttachments": self.hasAttachments,
            "internetMessageId": self.internetMessageId,
            "subject": self.subject,
            "bodyPreview": self.bodyPreview,
            "importance": self.importance,
            "parentFolderId": self.parentFolderId,
            "conversationId": self.conversationId,
            "isRead": self.isRead,
            "isDraft": self.isDraft,
            "body": {"contentType": "html", "content": content},
            "sender": self.sender,
            "from": self.from_,
            "toRecipients": self.toRecipients,
            "ccRecipients": self.ccRecipients,
        }
        if select is not None:
            wanted = {"id", *select}
            full = {name: value for name, value in full.items() if name in wanted}
        if expand_attachments:
            full["attachments"] = [dict(a) for a in self.attachments]
        return full


# --- ids and timestamps ---------------------------------------------------------------------


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    """urlsafe base64 without padding (callers pass multiples of 3 bytes, so none arises)."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode("ascii")


def user_id_for(mailbox: str) -> str:
    """A stable GUID for the user, as Graph's ``id`` of a user."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailsync-sim:user:{mailbox.lower()}"))


def folder_id_for(mailbox: str, folder: str = "inbox") -> str:
    key = f"{mailbox.lower()}\x00{folder.lower()}".encode()
    digest = hashlib.blake2b(key, digest_size=63).digest()
    return "AAMkA" + _b64(digest)  # folder ids are long opaque strings in Graph too


def change_key(message_id: str, version: int) -> str:
    """The changeKey of a message's ``version``-th change (Graph's changes on every edit)."""
    digest = hashlib.blake2b(f"{message_id}\x00{version}".encode(), digest_size=12).digest()
    return "CQAAABYAAA" + _b64(digest)


def owner_address(mailbox: str) -> dict[str, dict[str, str]]:
    local = mailbox.split("@", 1)[0]
    name = " ".join(p.capitalize() for p in local.replace("_", ".").split("."))
    return {"emailAddress": {"name": name, "address": mailbox}}


_day_prefix_cache: dict[int, str] = {}
_time_of_day: list[str] = []  # "HH:MM:SSZ" for every second of a day, built on first use


def iso(ts: int) -> str:
    """Epoch seconds -> ``2024-01-01T00:00:07Z``; table-driven because strftime is slow."""
    if not _time_of_day:
        _time_of_day.extend(
            f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(86400)
        )
    day, second = divmod(ts, 86400)
    prefix = _day_prefix_cache.get(day)
    if prefix is None:
        prefix = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%dT")
        _day_prefix_cache[day] = prefix
    return prefix + _time_of_day[second]


def parse_iso(value: str) -> datetime:
    """Parse a Graph datetime (``Z`` or offset, optional fractional seconds) to aware UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:  # Graph treats a zone-less literal as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --- generation -----------------------------------------------------------------------------


class _Context:
    """Per-mailbox constants and the conversation state of one generation pass."""

    def __init__(self, mailbox: str, seed: int, folder_id: str | None) -> None:
        self.mailbox = mailbox
        self.seed = seed
        self.folder_id = folder_id or folder_id_for(mailbox)
        self.id_hash = hashlib.blake2b(f"msg\x00{mailbox}\x00{seed}".encode(), digest_size=48)
        self.conv_hash = hashlib.blake2b(f"conv\x00{mailbox}\x00{seed}".encode(), digest_size=33)
        self.owner = owner_address(mailbox)
        self.recent: list[tuple[str, str]] = []  # (conversationId, topic) of recent threads

    def conversation(self, index: int, rng: random.Random) -> tuple[str, str, bool]:
        """(conversationId, topic, is_reply): about a third of messages continue a thread."""
        if self.recent and rng.random() < 0.35:
            conv_id, topic = self.recent[int(rng.random() * len(self.recent))]
            return conv_id, topic, True
        h = self.conv_hash.copy()
        h.update(index.to_bytes(8, "big"))
        conv_id = "AAQkA" + _b64(h.digest())
        topic = corpus.TOPICS[int(rng.random() * len(corpus.TOPICS))]
        self.recent.append((conv_id, topic))
        if len(self.recent) > RECENT_CONVERSATIONS:
            self.recent.pop(0)
        return conv_id, topic, False


# Shared between messages (never mutated): building fresh dicts per message costs 10% of the
# generation time.
_ADDRESSES = tuple({"emailAddress": {"name": n, "address": a}} for n, a in corpus.PEOPLE)
_N_ADDRESSES = len(_ADDRESSES)


def _attachments(message_id: str, rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in range(1 + int(rng.random() * 3)):
        kinds = corpus.ATTACHMENT_KINDS
        template, content_type = kinds[int(rng.random() * len(kinds))]
        digest = hashlib.blake2b(f"{message_id}\x00{n}".encode(), digest_size=48).digest()
        out.append(
            {
                "id": "AAMkA" + _b64(digest),
                "name": template.format(n=int(rng.random() * 9000) + 1000),
                "contentType": content_type,
                "size": 2_000 + int(rng.random() ** 3 * 5_000_000),  # mostly small, a few MB
                "isInline": content_type.startswith("image/") and rng.random() < 0.5,
            }
        )
    return out


def _build(ctx: _Context, index: int, received_ts: int, rng: random.Random) -> Message:
    h = ctx.id_hash.copy()
    h.update(index.to_bytes(8, "big"))
    digest = h.digest()
    message_id = "AAkALg" + _b64(digest[:33])  # 6 + 44 = 50 chars, urlsafe: no "/"
    received = iso(received_ts)
    sent_ts = received_ts - 1 - int(rng.random() * 120)
    conv_id, topic, is_reply = ctx.conversation(index, rng)
    sender = _ADDRESSES[int(rng.random() * _N_ADDRESSES)]
    to = [ctx.owner]
    to.extend(_ADDRESSES[int(rng.random() * _N_ADDRESSES)] for _ in range(int(rng.random() * 3)))
    # range(-1..1): two thirds of messages have no cc
    cc = [_ADDRESSES[int(rng.random() * _N_ADDRESSES)] for _ in range(int(rng.random() * 3) - 1)]
    span = corpus.body_span(rng)
    roll = rng.random()
    importance = "normal"
    if roll < IMPORTANCE_HIGH:
        importance = "high"
    elif roll > 1 - IMPORTANCE_LOW:
        importance = "low"
    has_attachments = rng.random() < ATTACHMENT_PROBABILITY
    return Message(
        id=message_id,
        receivedDateTime=received,
        sentDateTime=iso(sent_ts),
        createdDateTime=received,
        lastModifiedDateTime=received,
        changeKey="CQAAABYAAA" + _b64(digest[33:45]),
        internetMessageId=f"<{digest[33:45].hex()}.{index}@{DOMAIN}>",
        conversationId=conv_id,
        subject=f"RE: {topic}" if is_reply else topic,
        bodyPreview=corpus.PARA_TEXT[span[0]][:100],
        from_=sender,
        sender=sender,
        toRecipients=to,
        ccRecipients=cc,
        isRead=rng.random() < 0.7,
        importance=importance,
        hasAttachments=has_attachments,
        parentFolderId=ctx.folder_id,
        attachments=_attachments(message_id, rng) if has_attachments else [],
        received_ts=received_ts,
        body_span=span,
    )


def generate_messages(
    count: int,
    *,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    mailbox: str = DEFAULT_MAILBOX,
    folder_id: str | None = None,
) -> list[Message]:
    """``count`` messages, oldest first, sorted by (receivedDateTime, id)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = random.Random(f"{mailbox}\x00{seed}")  # str seeds hash stably across processes
    ctx = _Context(mailbox, seed, folder_id)
    ts = int(start.timestamp())
    messages: list[Message] = []
    # Nothing here is cyclic garbage, yet the collector would rescan the growing list over and
    # over: pausing it halves the time for 100,000 messages (3.0 s -> 1.6 s).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(count):
            if index and rng.random() >= TIE_PROBABILITY:
                ts += 1 + int(rng.random() * MAX_STEP_S)
            messages.append(_build(ctx, index, ts, rng))
    finally:
        if gc_was_enabled:
            gc.enable()
    # Tied timestamps are ordered by id, as the simulator orders them.
    messages.sort(key=lambda m: (m.received_ts, m.id))
    return messages


def new_message(
    mailbox: str,
    index: int,
    received: datetime,
    rng: random.Random,
    *,
    seed: int = 0,
    folder_id: str | None = None,
) -> Message:
    """A message arriving during a run; ``index`` must not collide with generated ones."""
    return _build(_Context(mailbox, seed, folder_id), index, int(received.timestamp()), rng)


# --- folders ---------------------------------------------------------------------------------

# What a folder does to the mail filed in it: what Outlook would have written there.
ROLE_SENT = "sent"  # the owner sent it: read, from the owner
ROLE_DRAFT = "draft"  # the owner is writing it: a draft, read, from the owner


def file_into(message: Message, folder_id: str, role: str | None, mailbox: str) -> None:
    """File a message that is not published yet (fresh from generation) into a folder."""
    message.parentFolderId = folder_id
    if role in (ROLE_SENT, ROLE_DRAFT):
        message.from_ = message.sender = owner_address(mailbox)
        message.isRead = True
        message.isDraft = role == ROLE_DRAFT


def spread_over_folders(
    messages: list[Message],
    targets: list[tuple[str, float, str | None]],
    *,
    mailbox: str,
    seed: int,
) -> None:
    """File each message into one of ``targets`` ``(folder id, weight, role)``, drawn by
    weight from a generator of its own: the messages themselves stay as generated."""
    rng = random.Random(f"{mailbox}\x00{seed}\x00folders")
    cumulative: list[float] = []
    total = 0.0
    for _, weight, _ in targets:
        total += weight
        cumulative.append(total)
    if total <= 0:
        raise ValueError("at least one folder needs a weight > 0 to receive messages")
    for message in messages:
        folder_id, _, role = targets[bisect.bisect_right(cumulative, rng.random() * total)]
        file_into(message, folder_id, role, mailbox)
